"""Prometheus metrics, shared by all gunicorn workers.

Under gunicorn each worker is a process, so counters live in files under
``PROMETHEUS_MULTIPROC_DIR`` (emptied by the master at start, see
``gunicorn.conf.py``) and a scrape merges them with ``MultiProcessCollector``.
The dashboard reads the same merged registry: one set of books, not two.

Label children are created once, here, so the request path only increments.

**Hit ratio**, everywhere in the lab (dashboard, benchmark, README): requests
answered from a cache -- this worker's memory, Redis, or a worker's last copy
during an outage, fresh or stale, a cached "not found" included (``hit +
stale + local``) -- divided by every request to the lookup routes that reached
the cache (``hit + stale + local + miss + collapsed + bypass + overloaded +
unavailable``; ``unavailable`` is a 503 ``database_unavailable``). Refused
input (400) and ids outside the table (404 without a lookup) are not lookups.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .config import STRATEGIES as STRATEGY_NAMES

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

STRATEGIES = STRATEGY_NAMES
RESULTS = ("hit", "stale", "miss", "collapsed", "bypass", "local", "overloaded", "unavailable")
CACHED_RESULTS = ("hit", "stale", "local")
TIERS = ("memory", "redis", "database", "local", "none")
SOURCES = ("version", "item")

_CACHE_REQUESTS = Counter(
    "cachelab_cache_requests_total",
    "Cache lookups by strategy, result (hit, stale, miss, collapsed, bypass, local, "
    "overloaded, unavailable) and tier that answered (memory, redis, database, local, none).",
    ["strategy", "result", "tier"],
)
CACHE_REQUESTS = {
    (s, r, t): _CACHE_REQUESTS.labels(s, r, t) for s in STRATEGIES for r in RESULTS for t in TIERS
}

_LOCK_WAITS = Counter(
    "cachelab_cache_lock_waits_total",
    "Requests that waited for another process to fill a key, by outcome (filled, "
    "timeout: gave up after CACHE_LOCK_WAIT_SECONDS with a 503).",
    ["outcome"],
)
LOCK_WAITS = {o: _LOCK_WAITS.labels(o) for o in ("filled", "timeout")}

_REFRESHES = Counter(
    "cachelab_cache_refreshes_total",
    "Background refreshes by trigger (stale, early) and outcome (ok, error, skipped: "
    "another process holds the lease, already-fresh, superseded: a newer write won).",
    ["trigger", "outcome"],
)
REFRESHES = {
    (t, o): _REFRESHES.labels(t, o)
    for t in ("stale", "early")
    for o in ("ok", "error", "skipped", "already-fresh", "superseded")
}
REFRESHES_REFUSED = Gauge(
    "cachelab_cache_refreshes_refused",
    "Background refreshes refused because the worker's pool and queue were full "
    "(CACHE_REFRESH_THREADS + CACHE_REFRESH_QUEUE), since the worker started.",
    multiprocess_mode="livesum",
)
_FILLS_SUPERSEDED = Counter(
    "cachelab_cache_fills_superseded_total",
    "Fills not stored because a newer write won, by where it was seen "
    "(newer-in-redis: a tombstone or newer entry; row-changed: the row's version).",
    ["reason"],
)
FILLS_SUPERSEDED = {r: _FILLS_SUPERSEDED.labels(r) for r in ("newer-in-redis", "row-changed")}

_REDIS_ERRORS = Counter(
    "cachelab_redis_errors_total",
    "Redis calls that failed or were refused, by kind "
    "(timeout, connection, breaker_open, readonly, response, unexpected; cluster: "
    "CLUSTERDOWN, a slot no node serves, or redirections past the client's limit; patient: "
    "the last, patient try of a read with no other answer than the database also failed).",
    ["kind"],
)
REDIS_ERRORS = {
    k: _REDIS_ERRORS.labels(k)
    for k in (
        "timeout",
        "connection",
        "breaker_open",
        "readonly",
        "response",
        "unexpected",
        "cluster",
        "patient",
    )
}

BREAKER_STATE = Gauge(
    "cachelab_redis_breaker_state",
    "Redis circuit breaker state: 0 closed, 1 half-open, 2 open (worst live worker).",
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "cachelab_redis_breaker_transitions_total",
    "Redis circuit breaker state changes.",
    ["from_state", "to_state"],
)
TRACKING_STATE = Gauge(
    "cachelab_tracking_state",
    "Tier-1 invalidation listener: 0 tracking, 1 starting, 2 fallback or off, 3 down "
    "(worst live worker).",
    multiprocess_mode="livemax",
)
INVALIDATIONS = Counter(
    "cachelab_tracking_invalidations_total",
    "Invalidation messages received from Redis (each may name several keys).",
)
CLUSTER_TOPOLOGY_CHANGES = Counter(
    "cachelab_cluster_topology_changes_total",
    "Changes of the Redis Cluster's shard map a worker saw (a failover, slots moved, a "
    "node added or removed); each starts a new tier-1 epoch.",
)

_SLOW_QUERY_SECONDS = Histogram(
    "cachelab_slow_query_duration_seconds",
    "Duration of the slow queries as seen by the app, by source (version, item) and outcome.",
    ["source", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 12.5, 15, 20, 30, 60),
)
SLOW_QUERY_SECONDS = {
    (s, o): _SLOW_QUERY_SECONDS.labels(s, o) for s in SOURCES for o in ("ok", "error")
}

MODES = ("ttl", "delete", "write-through", "notify")
_ITEM_READS = Counter(
    "cachelab_item_reads_total",
    "Item reads served from a cache, by invalidation mode and freshness against the newest "
    "version PostgreSQL announced (fresh, stale).",
    ["mode", "freshness"],
)
ITEM_READS = {(m, f): _ITEM_READS.labels(m, f) for m in MODES for f in ("fresh", "stale")}
_ITEM_STALENESS = Histogram(
    "cachelab_item_staleness_seconds",
    "Age of the newer version a stale item read missed, by invalidation mode.",
    ["mode"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ITEM_STALENESS = {m: _ITEM_STALENESS.labels(m) for m in MODES}
NOTIFY_FAILURES = Counter(
    "cachelab_notify_invalidation_failures_total",
    "PostgreSQL change events whose cache invalidation failed (Redis unavailable).",
)

REQUEST_SECONDS = Histogram(
    "cachelab_http_request_duration_seconds",
    "HTTP request duration by route, cache result and status class.",
    ["route", "cache_result", "status"],
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        15,
        30,
    ),
)
_request_children: dict[tuple[str, str, str], object] = {}


def request_seconds(route: str, cache_result: str, status: str):
    """The histogram child for these labels (created once per combination)."""
    child = _request_children.get((route, cache_result, status))
    if child is None:
        child = _request_children.setdefault(
            (route, cache_result, status), REQUEST_SECONDS.labels(route, cache_result, status)
        )
    return child


def registry() -> CollectorRegistry:
    """The registry to read: merged across workers when running under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def hit_ratio(counts: dict[str, float]) -> float | None:
    """The lab's one definition of hit ratio (see the module docstring)."""
    total = sum(counts.get(result, 0.0) for result in RESULTS)
    if not total:
        return None
    return sum(counts.get(result, 0.0) for result in CACHED_RESULTS) / total
