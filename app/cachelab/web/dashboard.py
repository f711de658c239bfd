"""The live dashboard: an HTML page, the snapshot it polls, and its charts.

``/api/dashboard`` is what only the app can say now: health of Redis and
PostgreSQL, the breaker, tier 1's mode, what Redis says about itself (INFO)
and the keys of the namespace. ``/api/dashboard/series`` is every figure over
time -- hit ratio, requests/s, latency quantiles, slow queries/s, the counts
by result -- as Prometheus computes them from the scraped counters
(``cachelab.web.promql``); the browser only draws them.

Reading the dashboard changes nothing on the server: the key scan talks to
Redis directly (not through the request path's circuit breaker, whose state
and error counters belong to real traffic), and only after a successful ping.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, render_template

from .. import metrics
from ..engine.keys import entry_key, namespace_pattern
from ..engine.model import decode
from ..engine.store import CacheUnavailable
from . import promql
from .context import Lab, lab
from .views import dependency_health

bp = Blueprint("dashboard", __name__)

REDIS_INFO_FIELDS = (
    "used_memory",
    "maxmemory",
    "maxmemory_policy",
    "evicted_keys",
    "expired_keys",
    "keyspace_hits",
    "keyspace_misses",
    "connected_clients",
    "tracking_clients",
    "redis_version",
    "valkey_version",
)
BREAKER_LEVELS = {0: "closed", 1: "half-open", 2: "open"}
MAX_KEYS_SHOWN = 20
MAX_KEYS_SCANNED = 10_000
_REDIS_FAILURES = (redis.exceptions.RedisError, OSError)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dashboard")
def dashboard_page() -> Response:
    settings = current_app.config["SETTINGS"]
    html = render_template("dashboard.html", settings=settings, max_keys=MAX_KEYS_SHOWN)
    return _no_store(Response(html, mimetype="text/html"))


@bp.get("/api/dashboard")
def dashboard_snapshot() -> Response:
    settings = current_app.config["SETTINGS"]
    service = lab()
    redis_state, pg_state = dependency_health(service)
    document = {
        "server_time": time.time(),
        "strategy": settings.cache_strategy,
        "ttl_seconds": settings.cache_ttl_seconds,
        "grace_seconds": settings.cache_grace_seconds,
        "breaker": read_breaker(metrics.registry()),
        "health": {"redis": redis_state, "postgres": pg_state},
        "redis_info": read_redis_info(service, redis_state["status"] == "up"),
        "keys": read_keys(service, settings.cache_namespace, redis_state["status"] == "up"),
    }
    return _no_store(jsonify(document))


@bp.get("/api/dashboard/series")
def dashboard_series() -> Response | tuple[Response, int]:
    """The charts and tables, from Prometheus (a fixed set of PromQL queries)."""
    settings = current_app.config["SETTINGS"]
    if not settings.prometheus_url:
        return _no_store(
            jsonify(
                status="off",
                reason="PROMETHEUS_URL is not set: no Prometheus behind this app "
                "(on AWS the figures are in CloudWatch)",
            )
        )
    try:
        document = promql.read_all(promql.Prometheus(settings.prometheus_url))
    except promql.PrometheusUnavailable as exc:
        response = _no_store(jsonify(status="unavailable", reason=str(exc)))
        response.headers["Retry-After"] = "2"
        return response, 503
    document["prometheus_ui"] = settings.prometheus_ui_url
    return _no_store(jsonify(document))


# -- the breaker --------------------------------------------------------------
def read_breaker(registry) -> dict[str, Any]:
    """The breaker state the latest change among live workers left (a
    livemostrecent gauge in the merged registry: see metrics.BREAKER_STATE)."""
    level: float | None = None
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "cachelab_redis_breaker_state":
                level = sample.value if level is None else max(level, sample.value)
    state = None if level is None else int(level)
    return {
        "level": state,
        "state": "unknown" if state is None else BREAKER_LEVELS.get(state, "unknown"),
    }


# -- Redis INFO ---------------------------------------------------------------
def read_redis_info(service: Lab, redis_up: bool) -> dict[str, Any]:
    """Memory against maxmemory, evictions, keyspace hits and misses, clients:
    what the server says about itself (read directly, not through the breaker)."""
    if not redis_up:
        return {"status": "unavailable"}
    try:
        info = service.store.info()
    except _REDIS_FAILURES + (CacheUnavailable,) as exc:
        return {"status": "unavailable", "error": f"redis: {type(exc).__name__}"}
    fields = {name: info[name] for name in REDIS_INFO_FIELDS if name in info}
    if "nodes" in info:  # a cluster: the summed figures, and one row per primary
        fields["nodes"] = info["nodes"]
    return {"status": "ok", **fields}


# -- keys ---------------------------------------------------------------------
def read_keys(service: Lab, namespace: str, redis_up: bool) -> dict[str, Any]:
    """The namespace's entries: fresh / stale / refreshing / missing, with TTLs."""
    if not redis_up:
        return {"status": "unavailable", "total": None, "items": []}
    try:
        data_keys: list[str] = []
        locks: set[str] = set()
        scanned = 0
        for raw in service.store.scan(namespace_pattern(namespace), count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            scanned += 1
            owner = entry_key(key)
            if owner is None or key.endswith(":fence"):
                pass  # fences: bookkeeping, not entries
            elif owner != key:
                locks.add(owner)  # a lease: the entry is being filled or refreshed
            else:
                data_keys.append(key)
            if scanned >= MAX_KEYS_SCANNED:
                break
        # Keys being filled for the first time have a lock and no entry yet.
        filling = sorted(locks.difference(data_keys))
        shown = sorted(data_keys)[:MAX_KEYS_SHOWN]
        shown += filling[: max(0, MAX_KEYS_SHOWN - len(shown))]
        replies = service.store.peek(shown)
    except _REDIS_FAILURES + (CacheUnavailable,) as exc:
        return {
            "status": "unavailable",
            "error": f"redis: {type(exc).__name__}",
            "total": None,
            "items": [],
        }
    now = time.time()
    items = []
    for key, (value, pttl, lease) in zip(shown, replies, strict=True):
        items.append(_key_state(key, value, pttl, _lease_alive(lease, now), now))
    return {
        "status": "ok",
        "total": len(data_keys),
        "filling": len(filling),
        "truncated": scanned >= MAX_KEYS_SCANNED,
        "items": items,
    }


def _lease_alive(lease: bytes | None, now: float) -> bool:
    """A lease is "<token> <expiry in ms>" (no Redis TTL): held while not expired."""
    try:
        return lease is not None and int(lease.split()[-1]) > now * 1000
    except (ValueError, IndexError):
        return False


def _key_state(key: str, raw: bytes | None, pttl: int, locked: bool, now: float) -> dict:
    tag = key[key.find("{") + 1 : key.rfind("}")]  # version:<digest> | item:<mode>:<id>
    kind = tag.split(":", 1)[0]
    state: dict[str, Any] = {
        "key": tag.rsplit(":", 1)[-1][:12],
        "kind": kind,
        "item": None,
        "refreshing": locked,
    }
    entry = decode(raw)
    if entry is None or pttl is None or pttl < 0:
        # No readable entry: being filled (lock held), or expired since the scan.
        state.update(state="missing", ttl_s=None, expires_s=None)
        return state
    if entry.tombstone or entry.absent:
        state.update(
            state="tombstone" if entry.tombstone else "not-found",
            item=int(tag.rsplit(":", 1)[-1]) if kind == "item" else None,
            ttl_s=None,
            expires_s=round(pttl / 1000, 1),
            version=entry.version if entry.tombstone else None,
        )
        return state
    soft_left = entry.soft_remaining(pttl)
    state.update(
        item=entry.value.get("item", entry.value.get("id")),
        version=entry.version,
        ttl_s=round(soft_left, 1),  # to the soft expiry: negative once stale
        expires_s=round(pttl / 1000, 1),  # hard expiry
        age_s=round(now - entry.created, 1),
        query_s=round(entry.delta, 3),
    )
    if locked:
        state["state"] = "refreshing"
    elif soft_left > 0:
        state["state"] = "fresh"
    else:
        state["state"] = "stale"
    return state
