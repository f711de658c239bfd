"""The items API: reads through the cache, writes that invalidate it.

``GET /api/items/<id>`` returns the item with its ``version`` and the same
cache headers as ``/api/version``. ``PUT /api/items/<id>`` (JSON
``{"payload": "..."}``) commits a new payload and returns the committed
version. Both take ``mode`` (ttl, delete, write-through, notify; default
``ITEMS_INVALIDATION``) and ``guard`` (on by default; ``off`` shows each
mode's race, see :mod:`cachelab.engine.writes`); each mode (and guard) has its own
key space, so modes can be compared side by side in one run.

An id above the table's highest one is a 404 before the cache (no lookup);
an absent id inside the table's range is looked up and cached as "not found".

The write API is off unless ``WRITE_API_TOKEN`` is set; then a PUT needs
``Authorization: Bearer <token>`` (401 without it, 403 with a wrong one).
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import BadRequest, Forbidden, Unauthorized

from ..config import INVALIDATION_MODES
from ..engine.keys import item_target
from . import responses
from .context import lab
from .errors import error_response
from .params import bad_request, check_arguments
from .views import finish, record

bp = Blueprint("items", __name__)
MAX_ITEM_ID = 1_000_000
MAX_PAYLOAD_BYTES = 65_536
_ITEM_ID = re.compile(r"[0-9]{1,7}")


def read_item_id(raw: str) -> int:
    # ASCII digits only: str.isdigit() also accepts '²' and other Unicode digits.
    if not _ITEM_ID.fullmatch(raw) or not 1 <= int(raw) <= MAX_ITEM_ID:
        raise bad_request(f"item id must be an integer from 1 to {MAX_ITEM_ID}")
    return int(raw)


def read_mode_args(allowed: tuple[str, ...]) -> tuple[str, bool, bool]:
    """``mode``, ``guard`` (on|off) and, for reads, ``cache=bypass``."""
    args = request.args
    check_arguments(args, allowed)
    mode = args.get("mode", current_app.config["SETTINGS"].items_invalidation)
    if mode not in INVALIDATION_MODES:
        raise bad_request(f"mode must be one of {', '.join(INVALIDATION_MODES)}")
    guard = args.get("guard", "on")
    if guard not in ("on", "off"):
        raise bad_request("guard must be 'on' or 'off'")
    cache = args.get("cache", "")
    if cache not in ("", "bypass"):
        raise bad_request("cache must be 'bypass' (or absent)")
    return mode, guard == "on", cache == "bypass"


@bp.get("/api/items/<raw_id>")
def get_item(raw_id: str) -> Response:
    item_id = read_item_id(raw_id)
    mode, guarded, bypass = read_mode_args(("mode", "guard", "cache"))
    running = lab()
    if not running.sources.may_exist(item_id):
        # Above the table's highest id: answered before the cache, like bad
        # input. A flood of such ids takes no lease or miss slot and writes no
        # "not found" into Redis (where it would evict real entries).
        return error_response(404, "not_found", f"no item {item_id}")
    target = item_target(running.settings.cache_namespace, item_id, mode, guarded)
    lookup = running.reads.get(target, bypass=bypass)
    record(lookup)
    if not lookup.found:
        # A cached (or just learnt) "not found": a 404 that says how it was served.
        response = error_response(404, "not_found", f"no item {item_id}")
        response.headers.extend(responses.cache_headers(lookup, None))
        return finish(response, lookup)
    if lookup.result != "BYPASS" or lookup.tier == "local":
        running.freshness.observe(mode, item_id, int(lookup.value["version"]))
    fields: dict[str, Any] = {
        "mode": mode,
        "guard": "on" if guarded else "off",
        "item": lookup.value,
    }
    return finish(responses.json_response(lookup, fields, "item"), lookup)


def _authorize() -> None:
    token = current_app.config["SETTINGS"].write_api_token
    if token is None:
        raise Forbidden("the write API is off; set WRITE_API_TOKEN to turn it on")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized(
            "send Authorization: Bearer <WRITE_API_TOKEN>",
            www_authenticate=WWWAuthenticate("bearer"),
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("wrong token")


def _payload() -> str:
    if request.mimetype != "application/json":
        raise bad_request("send a JSON body (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"payload"}:
        raise bad_request('the body must be a JSON object {"payload": "<text>"}')
    payload = body["payload"]
    if not isinstance(payload, str):
        raise bad_request("payload must be a string")
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise bad_request(f"payload must be at most {MAX_PAYLOAD_BYTES} bytes")
    if "\x00" in payload:
        raise bad_request("payload must not contain NUL characters")
    return payload


@bp.put("/api/items/<raw_id>")
def put_item(raw_id: str) -> Response:
    _authorize()
    item_id = read_item_id(raw_id)
    mode, guarded, _ = read_mode_args(("mode", "guard"))
    payload = _payload()
    result = lab().writer.put(item_id, payload, mode, guarded)
    g.cache_result = "none"
    response = jsonify(
        item=result.item,
        mode=mode,
        guard="on" if guarded else "off",
        cache_action=result.action,
        timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
    )
    response.headers["Cache-Control"] = "no-store"
    return response


__all__ = ["bp", "BadRequest"]
