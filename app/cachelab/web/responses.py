"""The hot path: responses built from bytes prepared once per entry generation.

The parts of an answer that depend only on the entry (the JSON fields of the
value, the rendered page) are encoded once and kept on the worker's copy of
the entry (:class:`cachelab.local.LocalEntry`); a request only formats its own
few fields (cache result, tier, TTL left, timings) and joins the pieces.

Validators: a weak ``ETag`` per entry generation (the per-request fields
differ, the data does not), ``Cache-Control: no-cache`` (a browser may keep
the answer but asks every time) and ``If-None-Match`` -> 304.

With ``CACHE_STRATEGY=edge`` an answer also tells Nginx when its copy stops
being fresh (:func:`edge_expiry`).

Flask's views and the WSGI hit path (:mod:`cachelab.web.hitpath`) build their
bodies and headers here, with the same functions: :func:`json_body`,
:func:`page_body`, :func:`cache_headers`, :func:`not_modified`.
"""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any

from flask import Response, current_app, render_template, request

from ..engine.model import BYPASS, HIT, MISS, STALE, Lookup

CACHE_NAME = "lab"
PAGE_MARK = "<!--lab:status-->"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"


def _static_fields(lookup: Lookup, extra: dict[str, Any]) -> bytes:
    """``"field":value,...}``: the document minus its per-request head."""
    document = {**extra, "strategy": lookup.strategy, "key": lookup.target.key}
    return json.dumps(document, separators=(",", ":"))[1:].encode()


def _prepared(lookup: Lookup, kind: str, build) -> Any:
    """Bytes for this generation: from the worker's copy, or built and kept there."""
    copy = lookup.copy
    if copy is None:
        return build()
    value = copy.prepared.get(kind)
    if value is None:
        value = copy.keep(kind, build())
    return value


def etag(lookup: Lookup) -> str | None:
    entry = lookup.entry
    version = "-" if entry.version is None else entry.version
    return f'W/"{entry.fence}.{version}.{int(entry.created * 1000)}"'


def _head(lookup: Lookup) -> bytes:
    detail = "null" if not lookup.detail else f'"{lookup.detail}"'
    ttl = "null" if lookup.ttl_remaining is None else f"{lookup.ttl_remaining:.3f}"
    timings = ",".join(f'"{name}":{value:.2f}' for name, value in lookup.timings_ms.items())
    return (
        f'{{"cache":"{lookup.result}","source":"{lookup.tier}","detail":{detail},'
        f'"ttl_remaining_s":{ttl},"timings_ms":{{{timings}}},'
    ).encode()


def json_body(lookup: Lookup, tail: bytes) -> bytes:
    """The JSON document: this request's fields, then the generation's prepared ones."""
    return _head(lookup) + tail


def json_response(lookup: Lookup, fields: dict[str, Any], kind: str) -> Response:
    tail = _prepared(lookup, kind, lambda: _static_fields(lookup, fields))
    return _finish(lookup, json_body(lookup, tail), JSON_TYPE)


def page_kind(template: str) -> str:
    return "page:" + template


def page_body(lookup: Lookup, prepared: tuple[bytes, bytes]) -> bytes:
    """The page: the generation's rendered halves around this request's status rows."""
    head, tail = prepared
    return head + _status_block(lookup).encode() + tail


def page_response(lookup: Lookup, template: str, **context: Any) -> Response:
    def build() -> tuple[bytes, bytes]:
        rendered = render_template(template, lookup=lookup, status_mark=PAGE_MARK, **context)
        head, _, tail = rendered.partition(PAGE_MARK)
        return head.encode(), tail.encode()

    prepared = _prepared(lookup, page_kind(template), build)
    return _finish(lookup, page_body(lookup, prepared), HTML_TYPE)


def _status_block(lookup: Lookup) -> str:
    """The per-request rows of the page: how this response was served."""
    timings = lookup.timings_ms
    cache_ms = timings.get("memory", timings.get("cache"))
    db_ms = timings.get("db")
    ttl = lookup.ttl_remaining
    if ttl is None:
        ttl_text = "—"
    elif ttl < 0:
        ttl_text = f"stale for {-ttl:.1f} s"
    else:
        ttl_text = f"{ttl:.1f} s"
    detail = f' <span class="muted">({html.escape(lookup.detail)})</span>' if lookup.detail else ""
    return (
        f'<tr><th scope="row">Cache result</th><td><span class="badge {lookup.result}" '
        f'id="cache-result">{lookup.result}</span>{detail}</td></tr>'
        f'<tr><th scope="row">Served from</th><td id="source">{lookup.tier}</td></tr>'
        f'<tr><th scope="row">Cache time</th><td id="cache-ms">'
        f"{'—' if cache_ms is None else f'{cache_ms:.2f} ms'}</td></tr>"
        f'<tr><th scope="row">Database time</th><td id="db-ms">'
        f"{'— (not queried)' if db_ms is None else f'{db_ms:.1f} ms'}</td></tr>"
        f'<tr><th scope="row">TTL left</th><td id="ttl">{ttl_text}</td></tr>'
    )


def not_modified(tag: str | None, if_none_match: str) -> bool:
    """``If-None-Match`` names this generation's ETag: answer 304."""
    return tag is not None and tag in if_none_match


def cache_headers(lookup: Lookup, tag: str | None) -> list[tuple[str, str]]:
    """The cache headers every lookup answer carries (200 and 304 alike)."""
    headers = [
        ("X-Cache", lookup.result),
        ("Cache-Status", cache_status(lookup)),
        ("Cache-Control", "no-cache"),
    ]
    if tag is not None:
        headers.append(("ETag", tag))
    return headers


def _finish(lookup: Lookup, body: bytes, content_type: str) -> Response:
    tag = etag(lookup)
    if not_modified(tag, request.headers.get("If-None-Match", "")):
        response = Response(status=304)
    else:
        response = Response(body, content_type=content_type)
        response.headers.extend(
            edge_headers(lookup, current_app.config["SETTINGS"].edge_cache_seconds)
        )
    response.headers.extend(cache_headers(lookup, tag))
    return response


def edge_headers(lookup: Lookup, edge_seconds: int) -> list[tuple[str, str]]:
    """A 200 of the ``edge`` strategy tells Nginx when its copy stops being fresh."""
    if lookup.strategy != "edge":
        return []
    return [("X-Accel-Expires", edge_expiry(time.time(), edge_seconds))]


def edge_expiry(now: float, edge_seconds: int) -> str:
    """``X-Accel-Expires`` for Nginx's copy of this answer: ``@`` the last whole
    second (Unix time) in which it is fresh.

    Why absolute: Nginx keeps cache time in whole seconds. A relative validity
    of N seconds (``proxy_cache_valid``) stamps ``ngx_time() + N`` and stays
    fresh while the clock's second is not past it, so a copy stored at 10.9 s
    with N = 1 was fresh until 12.0 s: 1 to 2 s (the staleness benchmark
    measured a p99 of 1,999 ms). Stamped ``@(second of now) + N - 1``, the
    copy is fresh until the N-th whole second after it was made: N - 1 to N s,
    never more than ``EDGE_CACHE_SECONDS``. Nginx hides the header from
    clients; Nginx and the app share the host's clock.
    """
    return f"@{math.floor(now) + edge_seconds - 1}"


def cache_status(lookup: Lookup) -> str:
    """RFC 9211 Cache-Status: hit / fwd=miss|stale|bypass|request, ttl, stored, detail."""
    ttl = None if lookup.ttl_remaining is None else math.floor(lookup.ttl_remaining)
    if lookup.result == HIT:
        status = f"{CACHE_NAME}; hit; ttl={max(ttl or 0, 0)}"
        if lookup.tier == "memory":
            status += f", {CACHE_NAME}-memory; hit"
        return status
    if lookup.result == STALE:
        return f"{CACHE_NAME}; hit; fwd=stale; ttl={min(ttl or -1, -1)}"
    if lookup.result == MISS:
        parts = [CACHE_NAME, "fwd=miss"]
        if lookup.stored:
            parts.append("stored")
        if lookup.detail == "collapsed":
            parts.append("collapsed")
        elif lookup.detail:
            parts.append(f"detail={lookup.detail}")
        if ttl is not None:
            parts.append(f"ttl={max(ttl, 0)}")
        return "; ".join(parts)
    assert lookup.result == BYPASS
    if lookup.detail == "request":
        return f"{CACHE_NAME}; fwd=request"
    status = f"{CACHE_NAME}; fwd=bypass; detail={lookup.detail}"
    if lookup.tier == "local":
        status += f", {CACHE_NAME}-local; hit"
    return status


def server_timing(timings_ms: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.2f}" for name, value in timings_ms.items())
