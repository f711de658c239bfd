"""The live dashboard: an HTML page and the JSON snapshot it polls.

``/api/dashboard`` reads the same merged multiprocess registry as ``/metrics``
(one set of books, shared by every gunicorn worker) and returns cumulative
totals and histogram buckets with the server's clock. The browser turns two
snapshots into rates, ratios and percentiles (``static/dashboard.js``), the way
Prometheus' ``rate()`` and ``histogram_quantile()`` do, and keeps the history.

Reading the dashboard changes nothing on the server: the key scan talks to
Redis directly (not through the request path's circuit breaker, whose state
and error counters belong to real traffic), and only after a successful ping.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, render_template

from .. import metrics
from ..engine.keys import entry_key, namespace_pattern
from ..engine.model import decode
from .context import Lab, lab
from .views import dependency_health

bp = Blueprint("dashboard", __name__)

# Routes whose requests are cache lookups (the page and its JSON twin): the
# dashboard's own polling, health checks and static files are not traffic.
LOOKUP_ROUTES = ("/", "/api/version", "/api/items/<raw_id>")
CACHE_RESULTS = metrics.RESULTS
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


@bp.get("/dashboard")
def dashboard_page() -> Response:
    settings = current_app.config["SETTINGS"]
    html = render_template("dashboard.html", settings=settings, max_keys=MAX_KEYS_SHOWN)
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/dashboard")
def dashboard_snapshot() -> Response:
    settings = current_app.config["SETTINGS"]
    service = lab()
    redis_state, pg_state = dependency_health(service)
    document = {
        "server_time": time.time(),
        # Counters are per app container; the browser keeps deltas per instance.
        "instance": socket.gethostname(),
        "strategy": settings.cache_strategy,
        "ttl_seconds": settings.cache_ttl_seconds,
        "grace_seconds": settings.cache_grace_seconds,
        **read_metrics(metrics.registry()),
        "health": {"redis": redis_state, "postgres": pg_state},
        "redis_info": read_redis_info(service, redis_state["status"] == "up"),
        "keys": read_keys(service, settings.cache_namespace, redis_state["status"] == "up"),
    }
    response = jsonify(document)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- metrics ------------------------------------------------------------------
def _empty_histogram() -> dict[str, Any]:
    return {"buckets": {}, "count": 0.0, "sum": 0.0}


def _add_histogram_sample(hist: dict[str, Any], suffix: str, labels: dict, value: float) -> None:
    if suffix == "_bucket":
        le = labels["le"]
        hist["buckets"][le] = hist["buckets"].get(le, 0.0) + value
    elif suffix == "_count":
        hist["count"] += value
    elif suffix == "_sum":
        hist["sum"] += value


def _finish_histogram(hist: dict[str, Any]) -> dict[str, Any]:
    """Buckets as [[upper bound, cumulative count], ...] sorted, +Inf as null."""
    pairs = sorted(
        ((float(le), count) for le, count in hist["buckets"].items()), key=lambda pair: pair[0]
    )
    return {
        "buckets": [[None if math.isinf(le) else le, count] for le, count in pairs],
        "count": hist["count"],
        "sum": hist["sum"],
    }


def read_metrics(registry) -> dict[str, Any]:
    """Cumulative totals from the merged registry: what /metrics exposes, as JSON."""
    cache_requests: dict[str, float] = {result: 0.0 for result in CACHE_RESULTS}
    by_strategy: dict[str, dict[str, float]] = {}
    lookups = _empty_histogram()
    lookups_by_result: dict[str, float] = {}
    slow = {"ok": _empty_histogram(), "error": _empty_histogram()}
    refreshes: dict[str, float] = {}
    lock_waits: dict[str, float] = {}
    redis_errors: dict[str, float] = {}
    item_reads: dict[str, dict[str, float]] = {}
    staleness: dict[str, dict[str, Any]] = {}
    breaker_level: float | None = None
    tracking_level: float | None = None
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "cachelab_cache_requests_total":
                result = labels.get("result", "")
                cache_requests[result] = cache_requests.get(result, 0.0) + value
                per = by_strategy.setdefault(labels.get("strategy", ""), {})
                per[result] = per.get(result, 0.0) + value
            elif name.startswith("cachelab_http_request_duration_seconds"):
                if labels.get("route") not in LOOKUP_ROUTES:
                    continue
                suffix = name[len("cachelab_http_request_duration_seconds") :]
                _add_histogram_sample(lookups, suffix, labels, value)
                if suffix == "_count":
                    result = labels.get("cache_result", "none")
                    lookups_by_result[result] = lookups_by_result.get(result, 0.0) + value
            elif name.startswith("cachelab_slow_query_duration_seconds"):
                outcome = labels.get("outcome", "ok")
                suffix = name[len("cachelab_slow_query_duration_seconds") :]
                _add_histogram_sample(
                    slow.setdefault(outcome, _empty_histogram()), suffix, labels, value
                )
            elif name == "cachelab_cache_refreshes_total":
                key = f"{labels.get('trigger')}:{labels.get('outcome')}"
                refreshes[key] = refreshes.get(key, 0.0) + value
            elif name == "cachelab_cache_lock_waits_total":
                lock_waits[labels.get("outcome", "")] = value + lock_waits.get(
                    labels.get("outcome", ""), 0.0
                )
            elif name == "cachelab_redis_errors_total":
                redis_errors[labels.get("kind", "")] = value + redis_errors.get(
                    labels.get("kind", ""), 0.0
                )
            elif name == "cachelab_redis_breaker_state":
                breaker_level = value if breaker_level is None else max(breaker_level, value)
            elif name == "cachelab_tracking_state":
                tracking_level = value if tracking_level is None else max(tracking_level, value)
            elif name == "cachelab_item_reads_total":
                per_mode = item_reads.setdefault(labels.get("mode", ""), {})
                freshness = labels.get("freshness", "")
                per_mode[freshness] = per_mode.get(freshness, 0.0) + value
            elif name.startswith("cachelab_item_staleness_seconds"):
                suffix = name[len("cachelab_item_staleness_seconds") :]
                _add_histogram_sample(
                    staleness.setdefault(labels.get("mode", ""), _empty_histogram()),
                    suffix,
                    labels,
                    value,
                )
    level = None if breaker_level is None else int(breaker_level)
    return {
        "cache_requests": cache_requests,
        "cache_requests_by_strategy": by_strategy,
        "lookups": {**_finish_histogram(lookups), "by_result": lookups_by_result},
        "slow_query": {outcome: _finish_histogram(hist) for outcome, hist in slow.items()},
        "refreshes": refreshes,
        "lock_waits": lock_waits,
        "redis_errors": redis_errors,
        "breaker": {
            "level": level,
            "state": "unknown" if level is None else BREAKER_LEVELS.get(level, "unknown"),
        },
        "tracking_level": None if tracking_level is None else int(tracking_level),
        "item_reads": item_reads,
        "item_staleness": {mode: _finish_histogram(h) for mode, h in staleness.items()},
    }


# -- Redis INFO ---------------------------------------------------------------
def read_redis_info(service: Lab, redis_up: bool) -> dict[str, Any]:
    """Memory against maxmemory, evictions, keyspace hits and misses, clients:
    what the server says about itself (read directly, not through the breaker)."""
    if not redis_up:
        return {"status": "unavailable"}
    try:
        info = service.store.info()
    except _REDIS_FAILURES as exc:
        return {"status": "unavailable", "error": f"redis: {type(exc).__name__}"}
    fields = {name: info[name] for name in REDIS_INFO_FIELDS if name in info}
    return {"status": "ok", **fields}


# -- keys ---------------------------------------------------------------------
def read_keys(service: Lab, namespace: str, redis_up: bool) -> dict[str, Any]:
    """The namespace's entries: fresh / stale / refreshing / missing, with TTLs."""
    if not redis_up:
        return {"status": "unavailable", "total": None, "items": []}
    client = service.store.client
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
        pipe = client.pipeline(transaction=False)
        for key in shown:
            pipe.get(key)
            pipe.pttl(key)
            pipe.get(f"{key}:lease")
        replies = pipe.execute() if shown else []
    except _REDIS_FAILURES as exc:
        return {
            "status": "unavailable",
            "error": f"redis: {type(exc).__name__}",
            "total": None,
            "items": [],
        }
    now = time.time()
    items = []
    for index, key in enumerate(shown):
        raw, pttl, lease = replies[3 * index : 3 * index + 3]
        items.append(_key_state(key, raw, pttl, _lease_alive(lease, now), now))
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
