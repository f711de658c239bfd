"""Prometheus metrics, shared by all gunicorn workers.

Under gunicorn each worker is a process, so counters live in files under
``PROMETHEUS_MULTIPROC_DIR`` (emptied by the master at start, see
``gunicorn.conf.py``) and a scrape merges them with ``MultiProcessCollector``.
The dashboard reads the same merged registry: one set of books, not two.
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

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

CACHE_REQUESTS = Counter(
    "cachelab_cache_requests_total",
    "Cache lookups by strategy and result (hit, stale, miss, bypass, local).",
    ["strategy", "result"],
)
LOCK_WAITS = Counter(
    "cachelab_cache_lock_waits_total",
    "Requests that waited for another process to fill a key, by outcome (filled, timeout).",
    ["outcome"],
)
REFRESHES = Counter(
    "cachelab_cache_refreshes_total",
    "Background refreshes by trigger (stale, early) and outcome (ok, error, skipped).",
    ["trigger", "outcome"],
)
REDIS_ERRORS = Counter(
    "cachelab_redis_errors_total",
    "Redis calls that failed or were refused by the open breaker, by kind.",
    ["kind"],
)
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
SLOW_QUERY_SECONDS = Histogram(
    "cachelab_slow_query_duration_seconds",
    "Duration of SELECT slow_version() as seen by the app, by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 12.5, 15, 20, 30, 60),
)
REQUEST_SECONDS = Histogram(
    "cachelab_http_request_duration_seconds",
    "HTTP request duration by route, cache result and status class.",
    ["route", "cache_result", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)


def registry() -> CollectorRegistry:
    """The registry to read: merged across workers when running under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST
