"""The caching engine against the real stack.

Tests marked ``engines`` run on both cache engines (Valkey, Redis 7): their
outcome depends on what the server does -- leases and fences (SET NX PX, Lua)
under concurrency across containers, CLIENT TRACKING's invalidations, ACLs,
restarts, SCAN/UNLINK. The others test the app's own rules (strategies, the
bulkhead, refresh pacing, PostgreSQL outages, the books) on Valkey only.

Slow-query calls are counted by PostgreSQL (pg_stat_statements), not by the
app. Timing bounds are generous multiples of the 1 s test delay, with
percentiles where a single slow request on a busy 2-core machine would prove
nothing; the benchmark reports the real figures.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from loadtest.stack import Stack, metric, parse_json, wait_until
from loadtest.traffic import Hits, Traffic, percentile

DELAY = 1.0  # SLOW_QUERY_SECONDS in loadtest/stack.py TEST_ENV
WORKERS_PER_APP = 2  # gunicorn default (GUNICORN_WORKERS)


def fresh_item() -> int:
    return 1000 + secrets.randbelow(9000)


def concurrent_gets(stack: Stack, paths: list[str]) -> list[requests.Response]:
    barrier = threading.Barrier(len(paths))

    def one(path):
        barrier.wait(timeout=30)
        return requests.get(stack.url(path), timeout=60)

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, paths))


def wait_for_replicas(stack: Stack, replicas: int) -> None:
    """Nginx spreads requests over every app replica (the stack waits for it when
    it starts them; this states it where a test relies on it)."""
    assert len(stack.containers("app")) == replicas
    stack.wait_every_replica_reached()


def edge_errors(stack: Stack, count: int = 10) -> list[str]:
    """Nginx's last error lines (why it answered 502 or 504: the upstream's fault)."""
    lines = stack.logs("nginx", tail=500).splitlines()
    return [line for line in lines if "[error]" in line or "[warn]" in line][-count:]


def read_entry(client: redis.Redis, key: str) -> dict:
    raw = client.get(key)
    assert raw is not None, f"{key} is not in the cache"
    entry: dict = json.loads(raw)
    return entry


def redis_client(stack: Stack) -> redis.Redis:
    """A direct client on the cache (published on 127.0.0.1 by tests/compose.test.yaml)."""
    return redis.Redis(host="127.0.0.1", port=int(stack.port("redis", 6379)), socket_timeout=5)


# -- cold keys and the bulkhead ------------------------------------------------------
@pytest.mark.engines
@pytest.mark.lab_settings(app_replicas=2)
def test_cold_key_stampede_runs_the_slow_query_once_across_replicas(lab):
    wait_for_replicas(lab, 2)
    item = fresh_item()
    before = lab.settled_slow_calls()
    responses = concurrent_gets(lab, [f"/api/version?item={item}"] * 100)
    codes = [r.status_code for r in responses]
    assert codes == [200] * 100, (Counter(codes), edge_errors(lab))
    assert len({parse_json(r)["version"] for r in responses}) == 1
    statuses = [r.headers["Cache-Status"] for r in responses]
    kinds = Counter(s.split(",")[0] for s in statuses)
    assert sum("stored" in s for s in statuses) == 1, f"exactly one request filled the key: {kinds}"
    assert lab.settled_slow_calls(at_least=before + 1) == before + 1, kinds


@pytest.mark.lab_settings(CACHE_STRATEGY="cache-aside")
def test_cache_aside_lets_the_stampede_through(lab):
    """The contrast: plain cache-aside runs the query once per concurrent miss."""
    item = fresh_item()
    before = lab.settled_slow_calls()
    responses = concurrent_gets(lab, [f"/api/version?item={item}"] * 20)
    assert all(r.status_code == 200 for r in responses)
    assert lab.settled_slow_calls(at_least=before + 2) >= before + 10


@pytest.mark.lab_settings(SLOW_QUERY_SECONDS="5", CACHE_LOCK_WAIT_SECONDS="10")
def test_a_flood_of_cold_misses_does_not_slow_the_hits(lab):
    """The bulkhead: 100 concurrent distinct cold items; a cached key keeps
    answering in milliseconds, and the misses beyond capacity get a fast 503."""
    hot = "/api/version?item=1"
    assert lab.get(hot).status_code == 200
    for _ in range(3):  # concurrent bursts reach both workers: each keeps a copy
        assert all(r.status_code == 200 for r in concurrent_gets(lab, [hot] * 16))
    wait_until(
        lambda: all(
            lab.get(hot).headers["Cache-Status"].endswith("memory; hit") for _ in range(12)
        ),
        10,
        interval=0.05,
        message="the hot key in the workers' memory",
    )
    cold_paths = [f"/api/version?item={item}" for item in random.sample(range(1000, 10_000), 100)]
    cold: list[requests.Response] = []
    flood = threading.Thread(target=lambda: cold.extend(concurrent_gets(lab, cold_paths)))
    before = lab.settled_slow_calls()
    traffic = Traffic(lab.base_url, [hot], threads=4, rate=100, duration=6)
    flood.start()
    wait_until(
        lambda: lab.running_slow_queries() >= 10,
        10,
        interval=0.05,
        message="the flood to reach PostgreSQL",
    )
    with traffic:
        wait_until(lambda: not traffic.running, 30, message="the hot-key load")
    flood.join(60)
    hits = traffic.hits
    samples = lab.app_metrics()
    books = "; ".join(
        f"{k.split('{')[0][9:]}{{{k.split('{')[1]} = {v:g}"
        for k, v in sorted(samples.items())
        if v and ("redis_errors" in k or "transitions" in k or "requests_total" in k)
    )
    assert len(hits) > 200 and not hits.errors(), f"{hits.summary()}\n{books}"
    # Milliseconds at the median; the tail bounded generously (2 cores, 100 queries in flight).
    assert hits.latency(50) <= 0.100, hits.summary()  # 15 ms on a quiet machine
    # CI's loaded machine: p99 292 ms, max 328 ms (p50 36 ms).
    assert hits.latency(90) <= 0.250 and hits.latency(99) <= 0.500, hits.summary()
    assert hits.max_latency() <= 1.0, hits.summary()
    statuses = sorted({r.status_code for r in cold})
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in cold if r.status_code == 503]
    for response in refused:
        assert parse_json(response)["error"] == "overloaded"
        assert response.headers["Retry-After"] == "1"
    # Refused at once, without waiting for a slot: the time is the client's and
    # the edge's (100 requests started together on 2 cores), far below the 5 s
    # query. A percentile plus a generous maximum, not one tight maximum.
    refusal_times = [r.elapsed.total_seconds() for r in refused]
    # A refusal that had waited for a slot would take the 5 s query at least.
    assert percentile(refusal_times, 90) < 2.0 and max(refusal_times, default=0) < 4.0, sorted(
        refusal_times
    )[-5:]
    served = [r for r in cold if r.status_code == 200]
    # 2 workers x 16 fill slots: at most 32 queries at once, the rest refused.
    assert 1 <= len(served) <= 2 * 16 and len(refused) >= 100 - 2 * 16
    assert lab.settled_slow_calls(at_least=before + len(served)) - before == len(served)


# -- stale-while-revalidate ----------------------------------------------------------
def _run_load(stack: Stack, path: str, seconds: float, during=None) -> Hits:
    """Bounded load from 6 threads (about 200 requests/s at most) for ``seconds``."""
    traffic = Traffic(stack.base_url, [path], threads=6, rate=200, duration=seconds)
    with traffic:
        if during is not None:
            during(traffic)
        wait_until(lambda: not traffic.running, seconds + 30, message="the load to finish")
    return traffic.hits


STEADY_TTL, STEADY_SECONDS = 2, 9.0  # over 4 TTLs of steady load


def _after_first_fill(hits: Hits) -> Hits:
    first_fill_done = min(h.ended for h in hits if h.x_cache == "MISS")
    return Hits(h for h in hits if h.started > first_fill_done)


@pytest.mark.parametrize("strategy", ["two-tier", "swr"])
def test_nobody_waits_after_the_first_fill(lab, strategy):
    ttl, seconds = STEADY_TTL, STEADY_SECONDS
    lab.reconfigure(CACHE_STRATEGY=strategy, CACHE_TTL_SECONDS=str(ttl))
    item = fresh_item()
    before = lab.settled_slow_calls()
    hits = _run_load(lab, f"/api/version?item={item}", seconds)
    calls = lab.settled_slow_calls(at_least=before + 2) - before
    assert not hits.errors(), hits.summary()
    later = _after_first_fill(hits)
    assert len(later) > 100
    # A request that waited for slow_version() would take >= DELAY.
    assert later.latency(99) < DELAY / 4 and later.max_latency() < DELAY / 2, later.summary()
    # One query per refresh window: the first fill plus at most one per (jittered) TTL.
    windows = int(seconds / (ttl * 0.9)) + 1
    assert 2 <= calls <= windows + 1, f"{calls} slow queries for {windows} TTL windows"
    # Nobody ran the query after the first fill (a Redis call timed out on this
    # busy 2-core machine may answer from the worker's copy: BYPASS).
    assert later.caches()["MISS"] == 0 and later.caches()["STALE"] + later.caches()["HIT"] > 0


def test_cache_aside_stalls_users_at_each_expiry(lab):
    """The contrast to the test above, under the same load."""
    lab.reconfigure(CACHE_STRATEGY="cache-aside", CACHE_TTL_SECONDS=str(STEADY_TTL))
    hits = _run_load(lab, f"/api/version?item={fresh_item()}", STEADY_SECONDS)
    stalls = [h for h in _after_first_fill(hits) if h.seconds >= DELAY * 0.9]
    assert len(stalls) >= 2, "cache-aside should make users wait at each expiry"


@pytest.mark.lab_settings(CACHE_TTL_SECONDS="1", XFETCH_BETA="0")
def test_stale_entry_is_served_while_postgres_is_down(lab):
    item = fresh_item()
    first = lab.get(f"/api/version?item={item}")
    assert first.headers["X-Cache"] == "MISS"
    postgres = lab.container("postgres")
    postgres.stop(timeout=10)
    try:
        stale = wait_until(
            lambda: (r := lab.get(f"/api/version?item={item}")).headers["X-Cache"] == "STALE" and r,
            timeout=10,
            message="the entry to turn stale",
        )
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
    wait_until(
        lambda: lab.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT",
        timeout=30,
        interval=0.3,
        message="a refresh to succeed once postgres is back",
    )
    samples = lab.app_metrics()
    assert metric(samples, "cachelab_cache_refreshes_total", outcome="error") >= 1


# -- tier 1 ------------------------------------------------------------------------------
@pytest.mark.engines
@pytest.mark.lab_settings(app_replicas=2)
def test_a_write_through_another_container_is_never_served_stale_by_memory(lab):
    """Two app containers, both serving an item from memory; a PUT lands on one
    of them. Every GET that starts after the PUT returned sees the new version,
    whichever container answers."""
    wait_for_replicas(lab, 2)
    token = lab.env["WRITE_API_TOKEN"]
    path = "/api/items/7?mode=write-through"
    lab.get(path)
    wait_until(
        lambda: (
            sum(lab.get(path).headers["Cache-Status"].endswith("memory; hit") for _ in range(20))
            == 20
        ),
        20,
        message="both containers in memory",
    )
    stale_after_write = []
    for round_ in range(20):
        written = requests.put(
            lab.url(path),
            json={"payload": f"round-{round_}"},
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert written.status_code == 200, written.text
        version = written.json()["item"]["version"]
        reads = [lab.get(path) for _ in range(10)]
        stale_after_write += [
            r.json()["item"]["version"] for r in reads if r.json()["item"]["version"] < version
        ]
        assert any(r.headers["Cache-Status"].endswith("memory; hit") for r in reads)
    assert stale_after_write == []


@pytest.mark.engines
def test_invalidation_reaches_every_worker_within_milliseconds(lab):
    """A SET made outside the app (another process) against warm memory copies:
    the time until no worker serves the old value, over 30 writes."""
    client = redis_client(lab)
    path = f"/api/version?item={fresh_item()}"
    first = lab.get(path)
    key = parse_json(first)["key"]
    lags = []
    session = requests.Session()
    for round_ in range(30):
        wait_until(
            lambda: all(
                session.get(lab.url(path)).headers["Cache-Status"].endswith("memory; hit")
                for _ in range(6)
            ),
            10,
            interval=0.05,
            message="both workers serving from memory",
        )
        entry = read_entry(client, key)
        entry["value"]["version"] = f"written-outside-{round_}"
        entry["fence"] += 1
        client.set(key, json.dumps(entry), px=client.pttl(key))
        written = time.perf_counter()
        last_old = written
        deadline = written + 2.0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            version = session.get(lab.url(path)).json()["version"]
            if version != f"written-outside-{round_}":
                last_old = started
            elif started - last_old > 0.05:
                break  # 50 ms of new values only from both workers
        lags.append(last_old - written)
    lags.sort()
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    print(
        f"\ninvalidation lag over {len(lags)} writes: p50 {p50 * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms, max {lags[-1] * 1000:.2f} ms"
    )
    assert p50 <= 0.005 and p99 <= 0.025 and lags[-1] <= 0.2, lags


@pytest.mark.engines
def test_memory_tier_is_bounded_when_the_server_refuses_tracking(lab):
    client = redis_client(lab)
    client.execute_command("ACL", "SETUSER", "default", "-client|tracking")
    try:
        lab.container("app").restart(timeout=10)
        lab.wait_ready()
        ready = wait_for_memory_tier(lab, "fallback")
        assert "1000 ms" in ready["bound"], ready
        path = f"/api/version?item={fresh_item()}"
        key = parse_json(lab.get(path))["key"]
        wait_until(
            lambda: lab.get(path).headers["Cache-Status"].endswith("memory; hit"),
            10,
            interval=0.05,
            message="a memory hit",
        )
        entry = read_entry(client, key)
        entry["value"]["version"] = "written-outside"
        entry["fence"] += 1
        client.set(key, json.dumps(entry), px=client.pttl(key))
        written = time.monotonic()
        wait_until(
            lambda: all(lab.get(path).json()["version"] == "written-outside" for _ in range(6)),
            5,
            interval=0.02,
            message="the new value from every worker",
        )
        assert time.monotonic() - written <= 1.0 + 0.5  # MEMORY_FALLBACK_TTL_MS + slack
    finally:
        client.execute_command("ACL", "SETUSER", "default", "+client|tracking")
        lab.container("app").restart(timeout=10)
        lab.wait_ready()
    wait_for_memory_tier(lab, "tracking")


def wait_for_memory_tier(lab, mode: str) -> dict:
    """/readyz answers 200 while each worker's listener is still ``starting``: wait
    until six answers in a row (both workers) report ``mode``."""

    def reported() -> dict | None:
        tiers = [parse_json(lab.get("/readyz"))["redis"]["memory_tier"] for _ in range(6)]
        return tiers[0] if all(tier["mode"] == mode for tier in tiers) else None

    return wait_until(reported, 15, interval=0.1, message=f"every worker's memory tier: {mode}")


# -- Redis trouble ----------------------------------------------------------------------
def _redis_fault_under_load(lab: Stack, fault, restore) -> tuple[Hits, int]:
    """10 s of load on a cached key; the fault from 1.5 s to 6.5 s."""
    item = fresh_item()
    assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
    before = lab.settled_slow_calls()

    def inject(traffic: Traffic) -> None:
        wait_until(
            lambda: time.monotonic() - traffic.t0 > 1.5, 5, interval=0.05, message="load to run"
        )
        fault()
        try:
            wait_until(
                lambda: time.monotonic() - traffic.t0 > 6.5,
                10,
                interval=0.05,
                message="load to run during the fault",
            )
        finally:
            restore()

    hits = _run_load(lab, f"/api/version?item={item}", 10.0, during=inject)
    calls = lab.settled_slow_calls(at_least=before) - before
    return hits, calls


def _assert_degraded_but_served(hits: Hits, calls: int) -> None:
    assert hits and not hits.errors(), hits.summary()
    assert hits.latency(99) < DELAY + 0.5 and hits.max_latency() < DELAY + 2.0, hits.summary()
    assert hits.caches()["BYPASS"] > 0, hits.summary()
    # Per worker: at most one query (each worker holds its copy), plus a refill.
    assert calls <= WORKERS_PER_APP + 1, f"{calls} slow queries during a Redis outage"


@pytest.mark.engines
def test_redis_stopped_under_load_no_5xx_and_bounded_queries(lab):
    redis_container = lab.container("redis")
    hits, calls = _redis_fault_under_load(
        lab, lambda: redis_container.stop(timeout=2), redis_container.start
    )
    _assert_degraded_but_served(hits, calls)
    metrics = lab.app_metrics()
    assert metric(metrics, "cachelab_redis_breaker_transitions_total", to_state="open") >= 1


@pytest.mark.engines
def test_redis_paused_under_load_breaker_opens_no_5xx(lab):
    redis_container = lab.container("redis")
    hits, calls = _redis_fault_under_load(lab, redis_container.pause, redis_container.unpause)
    _assert_degraded_but_served(hits, calls)
    metrics = lab.app_metrics()
    assert metric(metrics, "cachelab_redis_breaker_transitions_total", to_state="open") >= 1
    assert metric(metrics, "cachelab_redis_errors_total", kind="timeout") >= 1
    wait_until(
        lambda: lab.get("/readyz").json()["redis"]["breaker"] == "closed",
        timeout=20,
        message="the breaker to close after Redis returns",
    )


def read_from_every_workers_memory(lab: Stack, path: str) -> None:
    """Read ``path`` until every app container (one worker each) has answered
    it from memory: each holds a copy. Nginx alternates between the containers."""
    containers = lab.containers("app")

    def memory_hits() -> list[float]:
        return [
            metric(lab.container_metrics(c), "cachelab_cache_requests_total", tier="memory")
            for c in containers
        ]

    before = memory_hits()

    def every_worker_served() -> bool:
        for _ in range(4):
            lab.get(path)
        return all(now > then for now, then in zip(memory_hits(), before, strict=True))

    wait_until(every_worker_served, 20, message=f"{path} served from memory by every worker")


@pytest.mark.engines
@pytest.mark.lab_settings(app_replicas=2, GUNICORN_WORKERS="1")
def test_a_redis_restart_is_answered_from_the_workers_copies(lab):
    """Redis restarts empty: each worker writes its confirmed copy back instead of
    making the first reader of every key wait for the query.

    Two containers of one worker each, so that the set-up can prove that every
    worker holds a copy: with two workers in one container the kernel picks the
    one that accepts Nginx's connection, and one of them may never see a key
    (then its first read after the restart runs the query, as it should)."""
    wait_for_replicas(lab, 2)
    # Copies are written back only if tracking covered them when they were read:
    # every worker's listener back from what the previous test did to Redis.
    wait_until(
        lambda: metric(lab.app_metrics(), "cachelab_tracking_state") == 0,
        30,
        interval=0.2,
        message="tracking in every worker before the copies are read",
    )
    items = [fresh_item() for _ in range(3)]
    for item in items:
        assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
        read_from_every_workers_memory(lab, f"/api/version?item={item}")
    before = lab.settled_slow_calls()
    lab.container("redis").restart(timeout=5)
    wait_until(
        lambda: (
            metric(lab.app_metrics(), "cachelab_tracking_state") == 0
            and lab.get("/readyz").json()["redis"]["breaker"] == "closed"
        ),
        30,
        interval=0.2,
        message="Redis, and tracking in every worker, back",
    )
    for item in items:
        response = lab.get(f"/api/version?item={item}")
        assert response.status_code == 200, response.text
        assert response.elapsed.total_seconds() < DELAY / 2, response.headers.get("Cache-Status")
    assert lab.settled_slow_calls() == before
    assert int(lab.redis_cli("DBSIZE")) >= len(items)


@pytest.mark.lab_settings(CACHE_TTL_SECONDS="3", XFETCH_BETA="0")
def test_long_redis_outage_refreshes_each_workers_copy_once_per_ttl(lab):
    """During an outage longer than the TTL, a worker's stale copy is served at once
    and refreshed in the background about once per TTL, not on every read."""
    ttl, outage = 3, 9.0
    item = fresh_item()
    path = f"/api/version?item={item}"
    for _ in range(10):  # both workers serve (and so keep a copy of) the entry
        assert lab.get(path).status_code == 200
    redis_container = lab.container("redis")
    before = lab.settled_slow_calls()
    redis_container.stop(timeout=2)
    try:
        hits = _run_load(lab, path, outage)
    finally:
        redis_container.start()
    calls = lab.settled_slow_calls(at_least=before) - before
    assert not hits.errors(), hits.summary()
    assert hits.caches()["BYPASS"] == len(hits), hits.summary()
    # Each refresh takes DELAY, then the copy is fresh for a TTL again.
    per_worker = int(outage / (ttl * 0.9 + DELAY)) + 1
    assert 1 <= calls <= WORKERS_PER_APP * per_worker, f"{calls} queries in a {outage}s outage"


# -- books and keys --------------------------------------------------------------------
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

    assert delta("cachelab_cache_requests_total", strategy="two-tier", result="miss") == 1
    assert delta("cachelab_cache_requests_total", strategy="two-tier", result="hit") == 3
    assert delta("cachelab_cache_requests_total", strategy="two-tier", result="bypass") == 1
    assert delta("cachelab_slow_query_duration_seconds_count", outcome="ok") == 2
    assert (
        delta(
            "cachelab_http_request_duration_seconds_count", route="/api/version", cache_result="hit"
        )
        == 3
    )
    # The breaker: nothing opened it, the worker that answered has it closed, and
    # the gauge says closed. A worker's own state changes only on its own Redis
    # calls, so a worker that Nginx's kept-alive connections left idle since a
    # fault (test_redis_paused_... leaves one, two tests before) still holds
    # "open": the gauge is the latest change among the workers, not the worst
    # (the worst failed this test 2 of 2 run right after that one).
    assert delta("cachelab_redis_breaker_transitions_total", to_state="open") == 0
    assert lab.get("/readyz").json()["redis"]["breaker"] == "closed"
    assert metric(after, "cachelab_redis_breaker_state") == 0
    assert metric(after, "cachelab_tracking_state") == 0


@pytest.mark.engines
def test_entries_are_namespaced_json_and_purge_removes_entries_and_locks(lab):
    for item in (1, 2):
        lab.get(f"/api/version?item={item}")
    client = redis_client(lab)
    keys = sorted(k.decode() for k in client.scan_iter("lab:v3:*") if not k.endswith(b":fence"))
    assert len(keys) == 2 and all(k.startswith("lab:v3:{version:") for k in keys)
    entry = read_entry(client, keys[0])
    assert entry["f"] == 3 and entry["value"]["version"].startswith("PostgreSQL")
    assert entry["ttl"] <= 30 and entry["grace"] == 60 and entry["delta"] >= DELAY * 0.9
    assert client.pttl(keys[0]) > 60_000, "Redis keeps the entry for TTL + grace"
    client.set(f"{keys[0]}:lease", "an-orphaned-lease", px=60_000)
    fences = sum(1 for _ in client.scan_iter("lab:v3:*:fence"))
    result = lab.compose("exec", "-T", "app", "cachelab", "cache", "purge")
    assert f"deleted {3 + fences} keys" in result.stdout
    assert list(client.scan_iter("lab:v3:*")) == []
    assert lab.get("/api/version?item=1").headers["X-Cache"] == "MISS"
