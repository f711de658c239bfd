"""HTTP routes: the seed-style page, its JSON twin, health and metrics."""

from __future__ import annotations

import time
from functools import lru_cache

from flask import Blueprint, Response, current_app, g, jsonify, request

from .. import metrics
from ..engine import keys
from ..engine.model import Lookup
from ..engine.store import CacheUnavailable
from ..postgres.database import DatabaseUnavailable
from . import responses
from .context import Lab, lab
from .params import MAX_ITEM, read_lookup_args

bp = Blueprint("lab", __name__)


def count(lookup: Lookup) -> None:
    """Count the lookup once, by strategy, result and tier (also the WSGI hit path's)."""
    metrics.CACHE_REQUESTS[(lookup.strategy, lookup.metric_result, lookup.tier)].inc()


def record(lookup: Lookup) -> None:
    """Count the lookup, and keep it for the request log and the summary line."""
    g.lookup = lookup
    count(lookup)


# One Target per item and namespace (a key is a SHA-256 of the query): made once.
version_target = lru_cache(maxsize=4 * (MAX_ITEM + 1))(keys.version_target)


def finish(response: Response, lookup: Lookup) -> Response:
    timings = dict(lookup.timings_ms)
    timings["app"] = (time.perf_counter() - g.started) * 1000
    response.headers["Server-Timing"] = responses.server_timing(timings)
    return response


def _version_lookup() -> Lookup:
    item, bypass = read_lookup_args(request.args)
    running = lab()
    lookup = running.reads.get(
        version_target(running.settings.cache_namespace, item), bypass=bypass
    )
    record(lookup)
    return lookup


@bp.get("/")
def index() -> Response:
    lookup = _version_lookup()
    response = responses.page_response(
        lookup, "index.html", settings=current_app.config["SETTINGS"]
    )
    return finish(response, lookup)


@bp.get("/api/version")
def api_version() -> Response:
    lookup = _version_lookup()
    fields = {"version": lookup.value["version"], "item": lookup.target.ident}
    return finish(responses.json_response(lookup, fields, "version"), lookup)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests. Dependencies are /readyz's job."""
    return jsonify(status="ok")


def _probe(ping, failure: type[Exception]) -> dict:
    """One round trip: ``{"status": "up", "latency_ms": …}``, or
    ``{"status": "down", "error": …}``."""
    started = time.perf_counter()
    try:
        ping()
    except failure as exc:
        return {"status": "down", "error": str(exc)}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def dependency_health(running: Lab) -> tuple[dict, dict]:
    """Ping Redis and PostgreSQL once: shared by /readyz and /api/dashboard."""
    redis_state = {
        "breaker": running.store.breaker_state(),
        "memory_tier": memory_tier_status(running),
        **_probe(running.store.ping, CacheUnavailable),
        **running.store.topology_status(),
    }
    return redis_state, _probe(running.db.ping, DatabaseUnavailable)


def memory_tier_status(running: Lab) -> dict:
    """Tier 1's state: coherent (tracking), bounded (fallback), or not used."""
    tracking = running.tracking.status()
    fallback_ms = running.settings.memory_fallback_ttl_ms
    enabled = running.reads.memory_tier
    if not enabled:
        bound = "not used by this strategy"
    elif tracking["mode"] == "tracking":
        bound = "until the entry's TTL, invalidated by Redis on every write"
    else:
        bound = f"at most {fallback_ms} ms per copy (no invalidations)"
    return {
        **tracking,
        "enabled": enabled,
        "bound": bound,
        "entries": len(running.tier1),
        "bytes": running.tier1.bytes,
    }


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: PostgreSQL is required; Redis down means degraded, still ready."""
    redis_state, pg_state = dependency_health(lab())
    if pg_state["status"] != "up":
        status, code = "unavailable", 503
    elif redis_state["status"] != "up":
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    response = jsonify(status=status, redis=redis_state, postgres=pg_state)
    response.status_code = code
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
