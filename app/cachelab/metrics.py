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
With the ``edge`` strategy, the answers Nginx gave
from its own micro-cache never reach the app; they are counted by Nginx
(``cachelab_edge_requests_total``, below) and added to both sides: cached
answers ``+ edge`` over every request ``+ edge``, where *edge* is the requests
Nginx answered from its cache (cache status ``hit``, ``stale``, ``updating``,
``revalidated``). The others (``miss``, ``expired``, ``bypass``) reached the
app and are among its lookups.

**Slow-query buckets** are placed around the configured delay
(``SLOW_QUERY_SECONDS``): every query takes the delay plus a few ms, so
buckets at 1.002x, 1.005x, 1.01x ... of it resolve its percentiles to within
a fraction of a percent (coarse decade buckets all put it in one bucket, and
interpolation inside it invents a spread, e.g. p95 12.4 s for 10.01 s queries).

**Edge metric** (Nginx, not this process): ``cachelab_edge_requests_total``
with labels ``route`` (``version``: /api/version, ``page``: /, ``items``:
/api/items/<id>, ``other``), ``cache`` (Nginx's ``$upstream_cache_status``
lower-cased: ``hit``, ``stale``, ``updating``, ``revalidated``, ``miss``,
``expired``, ``bypass``; ``none`` when the request did not go through the
edge cache) and ``status`` (``2xx`` ... ``5xx``): every request Nginx
answered, counted from its access log and served at ``nginx:9145/metrics``
(nginx/entrypoint.d/50-edge-metrics.sh).
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

STRATEGIES = STRATEGY_NAMES  # the one list (cachelab.config)
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

# The state the latest change among live workers left (not the worst): a worker's
# breaker changes only on its own Redis calls, so a worker that got no request
# since a fault still says "open" after another worker's probe found Redis back
# -- the worst of them showed "open" for as long as one worker stayed idle.
BREAKER_STATE = Gauge(
    "cachelab_redis_breaker_state",
    "Redis circuit breaker state: 0 closed, 1 half-open, 2 open (the latest change "
    "among live workers).",
    multiprocess_mode="livemostrecent",
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

# Coarse buckets for anything, plus fine ones around the configured delay.
SLOW_QUERY_BASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Around the delay: a query takes the delay plus an overhead of a few ms (the
# round trip, the plan), so the fine buckets are the delay plus 1, 2, 3 ... ms.
SLOW_QUERY_FACTORS = (0.5, 0.9, 0.99, 1.5, 2)
SLOW_QUERY_OFFSETS = (0, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 500)  # ms


def slow_query_buckets(delay: float | None) -> tuple[float, ...]:
    """Histogram buckets for slow queries of about ``delay`` seconds."""
    fine: tuple[float, ...] = ()
    if delay and delay > 0:
        fine = tuple(delay * f for f in SLOW_QUERY_FACTORS) + tuple(
            delay + ms / 1000 for ms in SLOW_QUERY_OFFSETS
        )
    return tuple(sorted({round(b, 6) for b in (*SLOW_QUERY_BASE_BUCKETS, *fine)}))


def _configured_delay() -> float | None:
    """SLOW_QUERY_SECONDS as the app got it (the config validates it at start)."""
    try:
        return float(os.environ.get("SLOW_QUERY_SECONDS", "").strip())
    except ValueError:
        return None


_SLOW_QUERY_SECONDS = Histogram(
    "cachelab_slow_query_duration_seconds",
    "Duration of the slow queries as seen by the app, by source (version, item) and outcome; "
    "buckets around SLOW_QUERY_SECONDS.",
    ["source", "outcome"],
    buckets=slow_query_buckets(_configured_delay()),
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


# Nginx's edge cache (counted by Nginx; see the module docstring).
EDGE_METRIC = "cachelab_edge_requests_total"
EDGE_ROUTES = ("version", "page", "items", "other")
EDGE_STATUSES = ("hit", "stale", "updating", "revalidated", "miss", "expired", "bypass", "none")
EDGE_SERVED = ("hit", "stale", "updating", "revalidated")  # answered without the app


def edge_served(counts: dict[str, float]) -> float:
    """Requests Nginx answered from its cache, from counts by cache status."""
    return sum(counts.get(status, 0.0) for status in EDGE_SERVED)


def hit_ratio(counts: dict[str, float], edge: float = 0.0) -> float | None:
    """The lab's one definition of hit ratio (see the module docstring): the app's
    lookups by result, plus ``edge`` answers Nginx gave from its own cache."""
    total = sum(counts.get(result, 0.0) for result in RESULTS) + edge
    if not total:
        return None
    return (sum(counts.get(result, 0.0) for result in CACHED_RESULTS) + edge) / total
