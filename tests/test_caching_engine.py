"""Issue 3: stampede protection, stale-while-revalidate, the Redis breaker, metrics.

Slow-query calls are counted by PostgreSQL (pg_stat_user_functions), not by
the app. Timing bounds are generous multiples of the 1 s test delay; the
benchmark reports the real figures.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from loadtest.stack import Stack, metric, parse_json, wait_until
from loadtest.traffic import Hits, Traffic

DELAY = 1.0  # SLOW_QUERY_SECONDS in loadtest/stack.py TEST_ENV
WORKERS_PER_APP = 2  # gunicorn default (GUNICORN_WORKERS)


def fresh_item() -> int:
    return 1000 + secrets.randbelow(9000)


def concurrent_gets(stack: Stack, path: str, count: int) -> list[requests.Response]:
    barrier = threading.Barrier(count)

    def one(_):
        barrier.wait(timeout=30)
        return requests.get(stack.url(path), timeout=60)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def wait_for_replicas(stack: Stack, replicas: int) -> None:
    """Wait until Nginx spreads requests over every app replica."""
    containers = stack.containers("app")
    assert len(containers) == replicas

    def all_serving():
        for _ in range(4 * replicas):
            stack.get("/healthz", timeout=5)
        return all(
            metric(stack.container_metrics(c), "cachelab_http_request_duration_seconds_count",
                   route="/healthz") > 0 for c in containers)

    wait_until(all_serving, timeout=30, interval=0.5, message="nginx to reach every replica")


def test_cold_key_stampede_runs_the_slow_query_once_across_replicas(lab):
    lab.reconfigure(scale={"app": 2})
    wait_for_replicas(lab, 2)
    item = fresh_item()
    before = lab.settled_slow_calls(at_least=0)
    responses = concurrent_gets(lab, f"/api/version?item={item}", 100)
    assert [r.status_code for r in responses] == [200] * 100
    bodies = {parse_json(r)["version"] for r in responses}
    assert len(bodies) == 1
    results = [r.headers["X-Cache"] for r in responses]
    assert results.count("MISS") == 100 - results.count("HIT")
    statuses = [r.headers["Cache-Status"] for r in responses]
    assert sum("stored" in s for s in statuses) == 1, "exactly one request filled the key"
    assert lab.settled_slow_calls(at_least=before + 1) == before + 1


def test_cache_aside_lets_the_stampede_through(lab):
    """The contrast: plain cache-aside runs the query once per concurrent miss."""
    lab.reconfigure(CACHE_STRATEGY="cache-aside")
    item = fresh_item()
    before = lab.settled_slow_calls(at_least=0)
    responses = concurrent_gets(lab, f"/api/version?item={item}", 20)
    assert all(r.status_code == 200 for r in responses)
    assert lab.settled_slow_calls(at_least=before + 2) >= before + 10


def _run_load(stack: Stack, path: str, seconds: float, during=None) -> Hits:
    """Bounded load from 6 threads (about 200 requests/s at most) for ``seconds``.

    ``during(traffic)`` runs while the load does (e.g. to inject a fault).
    """
    traffic = Traffic(stack.base_url, [path], threads=6, rate=200, duration=seconds)
    with traffic:
        if during is not None:
            during(traffic)
        wait_until(lambda: not traffic.running, seconds + 30, message="the load to finish")
    return traffic.hits


def _steady_load(stack: Stack, item: int, seconds: float) -> Hits:
    return _run_load(stack, f"/api/version?item={item}", seconds)


def _after_first_fill(hits: Hits) -> Hits:
    first_fill_done = min(h.ended for h in hits if h.x_cache == "MISS")
    return Hits(h for h in hits if h.started > first_fill_done)


def test_swr_nobody_waits_after_the_first_fill_while_cache_aside_stalls(lab):
    ttl, seconds = 2, 9.0  # over 4 TTLs of steady load
    lab.reconfigure(CACHE_TTL_SECONDS=str(ttl))
    item = fresh_item()
    before = lab.settled_slow_calls(at_least=0)
    hits = _steady_load(lab, item, seconds)
    calls = lab.settled_slow_calls(at_least=before + 2) - before
    assert not hits.errors(), hits.summary()
    later = _after_first_fill(hits)
    assert len(later) > 100
    slowest = max(later, key=lambda s: s.seconds)
    # A request that waited for slow_version() would take >= DELAY; half of it
    # leaves room for a noisy machine, none for a query.
    assert slowest.seconds < DELAY / 2, f"a request waited after the first fill: {slowest}"
    # One query per refresh window: the first fill plus at most one per (jittered) TTL.
    windows = int(seconds / (ttl * 0.9)) + 1
    assert 2 <= calls <= windows + 1, f"{calls} slow queries for {windows} TTL windows"
    assert any(s.x_cache in ("STALE", "HIT") for s in later)

    lab.reconfigure(CACHE_STRATEGY="cache-aside", CACHE_TTL_SECONDS=str(ttl))
    hits = _steady_load(lab, fresh_item(), seconds)
    stalls = [h for h in _after_first_fill(hits) if h.seconds >= DELAY * 0.9]
    assert len(stalls) >= 2, "cache-aside should make users wait at each expiry"


def test_stale_entry_is_served_while_postgres_is_down(lab):
    lab.reconfigure(CACHE_TTL_SECONDS="1", XFETCH_BETA="0")
    item = fresh_item()
    first = lab.get(f"/api/version?item={item}")
    assert first.headers["X-Cache"] == "MISS"
    postgres = lab.container("postgres")
    postgres.stop(timeout=10)
    try:
        stale = wait_until(
            lambda: (r := lab.get(f"/api/version?item={item}")).headers["X-Cache"] == "STALE"
            and r, timeout=10, message="the entry to turn stale")
        assert stale.status_code == 200
        assert "fwd=stale" in stale.headers["Cache-Status"]
        assert parse_json(stale)["version"] == parse_json(first)["version"]
        # The failed refreshes are not cached: still the stale value, still 200.
        for _ in range(5):
            again = lab.get(f"/api/version?item={item}")
            assert again.status_code == 200 and again.headers["X-Cache"] == "STALE"
    finally:
        postgres.start()
    lab.wait_ready(timeout=60)
    wait_until(lambda: lab.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT",
               timeout=30, interval=0.3, message="a refresh to succeed once postgres is back")
    samples = lab.app_metrics()
    assert metric(samples, "cachelab_cache_refreshes_total", outcome="error") >= 1


def _redis_fault_under_load(lab: Stack, fault, restore) -> tuple[Hits, int]:
    """10 s of load on a cached key; the fault from 1.5 s to 6.5 s."""
    item = fresh_item()
    assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
    before = lab.settled_slow_calls(at_least=0)

    def inject(traffic: Traffic) -> None:
        wait_until(lambda: time.monotonic() - traffic.t0 > 1.5, 5, interval=0.05,
                   message="load to run")
        fault()
        try:
            wait_until(lambda: time.monotonic() - traffic.t0 > 6.5, 10, interval=0.05,
                       message="load to run during the fault")
        finally:
            restore()

    hits = _run_load(lab, f"/api/version?item={item}", 10.0, during=inject)
    calls = lab.settled_slow_calls(at_least=before) - before
    return hits, calls


def _assert_degraded_but_served(hits: Hits, calls: int) -> None:
    assert hits and not hits.errors(), hits.summary()
    assert hits.max_latency() < DELAY + 1.0, hits.summary()
    assert hits.caches()["BYPASS"] > 0, hits.summary()
    # Per worker: one query, then the in-process cache; plus one refill after recovery.
    assert calls <= WORKERS_PER_APP + 1, f"{calls} slow queries during a Redis outage"


def test_redis_stopped_under_load_no_5xx_and_bounded_queries(lab):
    redis = lab.container("redis")
    hits, calls = _redis_fault_under_load(lab, lambda: redis.stop(timeout=2), redis.start)
    _assert_degraded_but_served(hits, calls)
    metrics = lab.app_metrics()
    assert metric(metrics, "cachelab_redis_breaker_transitions_total", to_state="open") >= 1


def test_redis_paused_under_load_breaker_opens_no_5xx(lab):
    redis = lab.container("redis")
    hits, calls = _redis_fault_under_load(lab, redis.pause, redis.unpause)
    _assert_degraded_but_served(hits, calls)
    metrics = lab.app_metrics()
    assert metric(metrics, "cachelab_redis_breaker_transitions_total", to_state="open") >= 1
    assert metric(metrics, "cachelab_redis_errors_total", kind="timeout") >= 1
    wait_until(lambda: lab.get("/readyz").json()["redis"]["breaker"] == "closed"
               or lab.get("/api/version").headers["X-Cache"] in ("HIT", "MISS"),
               timeout=20, message="the breaker to close after Redis returns")


def test_metrics_count_what_happened(lab):
    item = fresh_item()
    before = lab.app_metrics()
    assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
    for _ in range(3):
        assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT"
    assert lab.get(f"/api/version?item={item}&cache=bypass").headers["X-Cache"] == "BYPASS"
    after = lab.app_metrics()

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("cachelab_cache_requests_total", strategy="swr", result="miss") == 1
    assert delta("cachelab_cache_requests_total", strategy="swr", result="hit") == 3
    assert delta("cachelab_cache_requests_total", strategy="swr", result="bypass") == 1
    assert delta("cachelab_slow_query_duration_seconds_count", outcome="ok") == 2
    assert delta("cachelab_http_request_duration_seconds_count", route="/api/version",
                 cache_result="hit") == 3
    assert metric(after, "cachelab_redis_breaker_state") == 0
    # The same registry is what Prometheus scrapes: well-formed exposition text.
    assert "cachelab_slow_query_duration_seconds_bucket" in " ".join(after)


def test_entries_are_namespaced_json_and_purge_removes_them(lab):
    for item in (1, 2):
        lab.get(f"/api/version?item={item}")
    keys = lab.redis_cli("--scan", "--pattern", "lab:v1:*").split()
    assert len(keys) == 2 and all(k.startswith("lab:v1:slow_version:") for k in keys)
    entry = json.loads(lab.redis_cli("GET", keys[0]))
    assert entry["value"]["version"].startswith("PostgreSQL")
    assert entry["soft_expiry"] > entry["created"] and entry["delta"] >= DELAY * 0.9
    ttl_ms = int(lab.redis_cli("PTTL", keys[0]))
    assert ttl_ms > 30_000, "the Redis TTL includes the grace period (hard expiry)"
    result = lab.compose("exec", "-T", "app", "cachelab", "cache", "purge")
    assert "deleted 2 keys" in result.stdout
    assert lab.redis_cli("DBSIZE") == "0"
    assert lab.get("/api/version?item=1").headers["X-Cache"] == "MISS"


def test_long_redis_outage_refreshes_each_workers_copy_once_per_ttl(lab):
    """During an outage longer than the TTL, a worker's stale copy is served at once
    and refreshed in the background about once per TTL, not on every read."""
    ttl, outage = 3, 9.0
    lab.reconfigure(CACHE_TTL_SECONDS=str(ttl), XFETCH_BETA="0")
    item = fresh_item()
    path = f"/api/version?item={item}"
    for _ in range(10):  # both workers serve (and so keep a copy of) the entry
        assert lab.get(path).status_code == 200
    redis = lab.container("redis")
    before = lab.settled_slow_calls(at_least=0)
    redis.stop(timeout=2)
    try:
        hits = _run_load(lab, path, outage)
    finally:
        redis.start()
    calls = lab.settled_slow_calls(at_least=before) - before
    assert not hits.errors(), hits.summary()
    assert hits.caches()["BYPASS"] == len(hits), hits.summary()
    # Each refresh takes DELAY, then the copy is fresh for a TTL again.
    per_worker = int(outage / (ttl * 0.9 + DELAY)) + 1
    assert 1 <= calls <= WORKERS_PER_APP * per_worker, f"{calls} queries in a {outage}s outage"
