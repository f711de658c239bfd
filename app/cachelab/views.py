"""HTTP routes: the seed-style page, its JSON twin, health and metrics."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request

from . import headers, metrics
from .cache import CacheService, Lookup
from .db import DatabaseUnavailable
from .params import read_lookup_args
from .redis_store import CacheUnavailable

bp = Blueprint("lab", __name__)


def _service() -> CacheService:
    return current_app.extensions["cachelab"]


def _lookup() -> Lookup:
    item, bypass = read_lookup_args(request.args)
    lookup = _service().get(item, bypass=bypass)
    g.lookup = lookup
    metrics.CACHE_REQUESTS.labels(lookup.strategy, lookup.metric_result).inc()
    return lookup


def _decorate(response: Response, lookup: Lookup) -> Response:
    timings = dict(lookup.timings_ms)
    timings["app"] = (time.perf_counter() - g.started) * 1000
    response.headers["X-Cache"] = headers.x_cache(lookup)
    response.headers["Cache-Status"] = headers.cache_status(lookup)
    response.headers["Server-Timing"] = headers.server_timing(timings)
    response.headers["Cache-Control"] = "no-store"
    return response


def lookup_document(lookup: Lookup) -> dict:
    return {
        "version": lookup.value["version"],
        "item": lookup.item,
        "cache": lookup.result,
        "source": lookup.source,
        "detail": lookup.detail or None,
        "strategy": lookup.strategy,
        "key": lookup.key,
        "ttl_remaining_s": None
        if lookup.ttl_remaining is None
        else round(lookup.ttl_remaining, 3),
        "timings_ms": {name: round(value, 2) for name, value in lookup.timings_ms.items()},
    }


@bp.get("/")
def index() -> Response:
    lookup = _lookup()
    settings = current_app.config["SETTINGS"]
    html = render_template("index.html", doc=lookup_document(lookup), settings=settings)
    return _decorate(Response(html, mimetype="text/html"), lookup)


@bp.get("/api/version")
def api_version() -> Response:
    lookup = _lookup()
    return _decorate(jsonify(lookup_document(lookup)), lookup)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests. Dependencies are /readyz's job."""
    return jsonify(status="ok")


def _probe(ping, failure: type[Exception]) -> dict:
    """One round trip: ``{"status": "up", "latency_ms": …}`` or ``{"status": "down", "error": …}``."""
    started = time.perf_counter()
    try:
        ping()
    except failure as exc:
        return {"status": "down", "error": str(exc)}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def dependency_health(service: CacheService) -> tuple[dict, dict]:
    """Ping Redis and PostgreSQL once: shared by /readyz and /api/dashboard."""
    redis_state = {"breaker": service.store.breaker.state,
                   **_probe(service.store.ping, CacheUnavailable)}
    return redis_state, _probe(service.db.ping, DatabaseUnavailable)


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: PostgreSQL is required; Redis down means degraded, still ready."""
    redis_state, pg_state = dependency_health(_service())
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
