"""Issue 6: the fault suite. Real containers broken with the Docker SDK under a
bounded load from the host to 127.0.0.1 (Nginx's published port).

Each test holds one fault while ``Traffic`` sends about RATE requests/s from
THREADS threads over a few warm keys, then ends the fault and measures how long
the stack takes to recover. The cache server's faults run once per cache engine
(Valkey, Redis 7: how each stops, pauses, restarts empty and comes back with
tracking is the server's); PostgreSQL's and the app's run on Valkey.
``FAULTS`` is the table the README documents (README "Fault behaviour"):
allowed statuses and how many errors, the latency bound during the fault, the
recovery bound after it, and the data check.
Measured figures are written to results/faults.json (git-ignored).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from loadtest.stack import ROOT, parse_json, wait_until
from loadtest.traffic import Hits, Traffic

DELAY = 1.0  # SLOW_QUERY_SECONDS of the test stack
THREADS, RATE = 6, 20.0  # load during every fault: ~20 requests/s from 6 threads
WARM_ITEMS = (1, 2, 3)
PATHS = tuple(f"/api/version?item={item}" for item in WARM_ITEMS)
DURING_FAULT = 60  # requests answered while the fault holds (~3 s at RATE)
AFTER_RECOVERY = 30  # requests after recovery that must all be 200
CUT_OFF = "ChunkedEncodingError"  # requests' name for an answer that ended mid-body

# fault -> what the tests assert (and the README's table says).
#   allowed: statuses a request may get while the fault lasts (0 = no answer)
#   max_errors: how many answers other than 200 (None: any number of the allowed)
#   latency: the 99th percentile of the requests during the fault, in seconds;
#            every request also answers within MAX_LATENCY_FACTOR times it
#   recovery: seconds from the end of the fault until `recovered` holds
#   cut_off: an answer may also end mid-way (the client's ChunkedEncodingError):
#            a worker killed between writing its headers and its body, which
#            Nginx had already passed on, so it cannot turn it into a 502
FAULTS: dict[str, dict[str, Any]] = {
    "redis-stopped": dict(
        allowed={200}, max_errors=0, latency=DELAY + 3, recovery=20, recovered="X-Cache HIT again"
    ),
    "redis-paused": dict(
        allowed={200}, max_errors=0, latency=DELAY + 3, recovery=20, recovered="X-Cache HIT again"
    ),
    "redis-restarted-empty": dict(
        allowed={200}, max_errors=0, latency=DELAY + 3, recovery=20, recovered="X-Cache HIT again"
    ),
    "redis-disconnected": dict(
        allowed={200}, max_errors=0, latency=DELAY + 3, recovery=20, recovered="X-Cache HIT again"
    ),
    "postgres-stopped": dict(
        allowed={200},
        max_errors=0,
        latency=2.0,
        recovery=30,
        recovered="an uncached item answers 200",
        cold=503,
        cold_latency=10,
    ),
    "postgres-paused": dict(
        allowed={200},
        max_errors=0,
        latency=2.0,
        recovery=30,
        recovered="an uncached item answers 200",
        cold=503,
        cold_latency=10,
    ),
    "postgres-restarted": dict(
        allowed={200},
        max_errors=0,
        latency=2.0,
        recovery=30,
        recovered="an uncached item answers 200",
    ),
    "app-worker-killed": dict(
        allowed={200, 502},
        cut_off=True,
        max_errors=THREADS,
        latency=DELAY + 4,
        recovery=30,
        recovered="2 gunicorn workers again",
    ),
    "app-restarted": dict(
        allowed={200, 502, 504}, max_errors=None, latency=5.0, recovery=60, recovered="/readyz 200"
    ),
    "app-rolling-restart": dict(
        allowed={200}, max_errors=0, latency=5.0, recovery=60, recovered="both replicas healthy"
    ),
}
MAX_LATENCY_FACTOR = 3  # a generous cap for the slowest single request
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    if RESULTS:
        out = ROOT / "results"
        out.mkdir(exist_ok=True)
        Path(out / "faults.json").write_text(json.dumps(RESULTS, indent=2, sort_keys=True))


def warm(lab) -> None:
    """Fill the warm keys (in parallel: one slow query each)."""
    threads = [threading.Thread(target=lab.get, args=(path,)) for path in PATHS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    wait_until(
        lambda: all(lab.get(path).headers.get("X-Cache") == "HIT" for path in PATHS),
        20,
        message="the warm keys to be cached",
    )


def cache_hit_again(lab) -> bool:
    return lab.get(PATHS[0], timeout=10).headers.get("X-Cache") == "HIT"


def ready(lab) -> bool:
    return lab.get("/readyz", timeout=10).status_code == 200


def wait_for_requests(traffic: Traffic, since: float, count: int, timeout: float = 30) -> None:
    wait_until(
        lambda: len(traffic.since(since)) >= count,
        timeout,
        interval=0.1,
        message=f"{count} requests under load",
    )


def check(
    name: str,
    traffic: Traffic,
    fault_start: float,
    fault_end: float,
    recovered_at: float,
    extra: dict | None = None,
) -> Hits:
    """Assert the FAULTS row ``name`` on what the load saw; record the figures.

    "During" runs from the fault until recovery, and over at least
    DURING_FAULT requests (a worker is respawned in well under a second)."""
    spec = FAULTS[name]
    window = traffic.since(fault_start)
    window_end = max(
        recovered_at,
        window[DURING_FAULT - 1].started + 1e-6 if len(window) >= DURING_FAULT else recovered_at,
    )
    during = traffic.between(fault_start, window_end)
    after = traffic.since(window_end)
    recovery = recovered_at - fault_end
    RESULTS[name] = {
        "during": during.summary(),
        "after": after.summary(),
        "errors": len(during.errors()),
        "p99_s": round(during.latency(99), 3),
        "max_s": round(during.max_latency(), 3),
        "recovery_s": round(recovery, 2),
        **(extra or {}),
    }
    print(f"\n{name}: during {during.summary()}; recovery {recovery:.1f}s; after {after.summary()}")
    if fault_end > fault_start:  # a held fault (a restart may be over in under a second)
        assert len(during) >= 10, f"too little load during the fault: {during.summary()}"
    unexpected = Counter(
        hit.status
        for hit in during
        if hit.status not in spec["allowed"]
        and not (spec.get("cut_off") and hit.status == 0 and hit.body == CUT_OFF)
    )
    assert not unexpected, (
        f"{name}: statuses outside {spec['allowed']}: {unexpected}; "
        f"e.g. {[h.body for h in during.errors()][:3]}"
    )
    if spec["max_errors"] is not None:
        assert len(during.errors()) <= spec["max_errors"], f"{name}: {during.summary()}"
    assert during.latency(99) <= spec["latency"], f"{name}: {during.summary()}"
    assert during.max_latency() <= spec["latency"] * MAX_LATENCY_FACTOR, (
        f"{name}: {during.summary()}"
    )
    assert recovery <= spec["recovery"], f"{name}: recovered after {recovery:.1f}s"
    assert after and all(hit.status == 200 for hit in after), f"{name} after: {after.summary()}"
    return during


def run_fault(
    lab,
    name: str,
    inject,
    heal,
    recovered,
    hold=None,
    extra=None,
    hold_requests: int = DURING_FAULT,
) -> Traffic:
    """Load -> inject -> hold for ``hold_requests`` requests -> heal -> wait for recovery.

    A restart is its own end: ``hold_requests=0``, and the recovery time counts
    from the moment the restart began."""
    spec = FAULTS[name]
    warm(lab)
    traffic = Traffic(lab.base_url, PATHS, threads=THREADS, rate=RATE, duration=180)
    with traffic:
        wait_for_requests(traffic, traffic.t0, 10)
        fault_start = time.monotonic()
        if hold_requests:
            inject()
            try:
                wait_for_requests(traffic, fault_start, hold_requests)
                if hold is not None:
                    hold()
            finally:
                heal()
            fault_end = time.monotonic()
        else:
            fault_end = fault_start
            inject()
        wait_until(
            lambda: recovered(lab),
            spec["recovery"] + 15,
            interval=0.25,
            message=f"{name}: {spec['recovered']}",
        )
        recovered_at = time.monotonic()
        wait_for_requests(traffic, fault_start, DURING_FAULT)
        wait_for_requests(traffic, max(recovered_at, time.monotonic()), AFTER_RECOVERY)
    check(name, traffic, fault_start, fault_end, recovered_at, extra)
    return traffic


def slow_version_survives(lab) -> None:
    """The function is in the database volume (db-init does not run on a restart)."""
    assert lab.psql("SELECT count(*) FROM pg_proc WHERE proname = 'slow_version'") == "1"
    assert lab.psql("SELECT slow_version()").startswith("PostgreSQL ")


# -- Redis -------------------------------------------------------------------------
@pytest.mark.engines
def test_redis_stopped_under_load(lab):
    redis = lab.container("redis")
    traffic = run_fault(
        lab, "redis-stopped", lambda: redis.stop(timeout=5), redis.start, cache_hit_again
    )
    assert "BYPASS" in traffic.hits.caches()


@pytest.mark.engines
def test_redis_paused_under_load(lab):
    redis = lab.container("redis")
    traffic = run_fault(lab, "redis-paused", redis.pause, redis.unpause, cache_hit_again)
    assert "BYPASS" in traffic.hits.caches()


@pytest.mark.engines
def test_redis_restarted_with_empty_memory_under_load(lab):
    redis = lab.container("redis")
    dbsize: dict[str, Any] = {}

    def run_id() -> str:
        return next(
            line.split(":", 1)[1]
            for line in lab.redis_cli("INFO", "server").split()
            if line.startswith("run_id:")
        )

    def restart():
        dbsize["before"] = int(lab.redis_cli("DBSIZE"))
        dbsize["run_id_before"] = run_id()
        redis.restart(timeout=5)
        # The container runs before its server listens: ask until it answers.
        wait_until(lambda: _answers(run_id), 10, message="the restarted server to answer")
        dbsize["run_id_after"] = run_id()

    run_fault(
        lab,
        "redis-restarted-empty",
        restart,
        lambda: None,
        cache_hit_again,
        hold_requests=0,
        extra={"dbsize": dbsize},
    )
    assert dbsize["before"] >= len(WARM_ITEMS)
    # A new process that loaded nothing (no persistence): whatever it holds now,
    # the workers wrote back or refilled after the restart.
    info = lab.redis_cli("INFO", "persistence")
    assert "rdb_last_load_keys_loaded:0" in info and "aof_enabled:0" in info, info
    assert dbsize["run_id_before"] != dbsize["run_id_after"]


@pytest.mark.engines
def test_redis_disconnected_from_the_network_under_load(lab):
    redis = lab.container("redis")
    network = lab.docker.networks.get(f"{lab.project}_default")
    traffic = run_fault(
        lab,
        "redis-disconnected",
        lambda: network.disconnect(redis),
        lambda: network.connect(redis, aliases=["redis"]),
        cache_hit_again,
    )
    assert "BYPASS" in traffic.hits.caches()


# -- PostgreSQL --------------------------------------------------------------------
def cold_probe(lab, item: int) -> tuple[int, float, dict]:
    started = time.monotonic()
    response = lab.get(f"/api/version?item={item}", timeout=30)
    seconds = time.monotonic() - started
    assert "Traceback" not in response.text
    return response.status_code, seconds, dict(response.headers)


_UNCACHED_ITEMS = iter(range(9000, 9999))


def uncached_item_answers(lab):
    return lab.get(f"/api/version?item={next(_UNCACHED_ITEMS)}", timeout=30).status_code == 200


@pytest.mark.parametrize("fault", ["postgres-stopped", "postgres-paused"])
def test_postgres_down_serves_the_cache_and_503_for_the_rest(lab, fault):
    postgres = lab.container("postgres")
    inject, heal = {
        "postgres-stopped": (lambda: postgres.stop(timeout=10), postgres.start),
        "postgres-paused": (postgres.pause, postgres.unpause),
    }[fault]
    probe: dict[str, Any] = {}

    def hold():
        status, seconds, headers = cold_probe(lab, 8000 + len(fault))
        probe.update(
            status=status, seconds=round(seconds, 2), retry_after=headers.get("Retry-After")
        )

    run_fault(
        lab, fault, inject, heal, uncached_item_answers, hold=hold, extra={"cold_probe": probe}
    )
    assert probe["status"] == FAULTS[fault]["cold"], probe
    assert probe["retry_after"], probe
    assert probe["seconds"] <= FAULTS[fault]["cold_latency"], probe
    slow_version_survives(lab)


def test_postgres_restarted_keeps_its_data(lab):
    postgres = lab.container("postgres")
    run_fault(
        lab,
        "postgres-restarted",
        lambda: postgres.restart(timeout=10),
        lambda: None,
        uncached_item_answers,
        hold_requests=0,
    )
    slow_version_survives(lab)


# -- the app ----------------------------------------------------------------------
WORKERS_SCRIPT = """
import os
pids = []
for pid in os.listdir('/proc'):
    if not pid.isdigit() or pid == '1':
        continue
    try:
        stat = open(f'/proc/{pid}/stat').read()
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
    except OSError:
        continue
    if stat.rsplit(')', 1)[1].split()[1] == '1' and b'gunicorn' in cmd:
        pids.append(pid)
print(' '.join(sorted(pids)))
"""


def gunicorn_workers(container) -> list[int]:
    code, out = container.exec_run(["python", "-c", WORKERS_SCRIPT])
    assert code == 0, out
    return [int(pid) for pid in out.decode().split()]


def test_one_app_worker_killed_under_load(lab):
    app = lab.container("app")
    before = gunicorn_workers(app)
    assert len(before) == 2, before
    victim = before[0]

    def kill():
        code, out = app.exec_run(["python", "-c", f"import os; os.kill({victim}, 9)"])
        assert code == 0, out

    def respawned(_lab) -> bool:
        now = gunicorn_workers(app)
        return len(now) == 2 and victim not in now

    run_fault(lab, "app-worker-killed", kill, lambda: None, respawned, hold_requests=0)


def test_app_container_restarted_under_load(lab):
    app = lab.container("app")
    probe: dict[str, Any] = {}

    def restart():
        app.stop(timeout=35)
        page = lab.get("/api/version?item=1", timeout=10)  # while no app answers
        probe.update(status=page.status_code, body=page.text, headers=dict(page.headers))
        app.start()

    traffic = run_fault(lab, "app-restarted", restart, lambda: None, ready, hold_requests=0)
    assert probe["status"] in (502, 504) and f"<h1>{probe['status']} " in probe["body"], probe
    assert probe["headers"].get("Retry-After") == "5", probe
    errors = traffic.hits.errors()
    for hit in errors:  # Nginx's small page, never its default one, and a hint when to retry
        assert hit.status in (502, 504) and f"<h1>{hit.status} " in hit.body, hit
        assert hit.headers.get("Retry-After") == "5", hit.headers
        assert hit.headers.get("Content-Type") == "text/html; charset=utf-8", hit.headers
    # Refused connections give 502, connections to the address that is gone
    # while the container restarts time out after proxy_connect_timeout (2 s): 504.
    RESULTS["app-restarted"]["edge_errors"] = dict(errors.statuses())


@pytest.mark.lab_settings(app_replicas=2)
def test_rolling_restart_of_two_replicas_gives_no_errors(lab):
    """Graceful shutdown: gunicorn finishes in-flight requests on SIGTERM and
    Nginx passes a refused request to the other replica."""
    replicas = lab.containers("app")
    assert len(replicas) == 2

    def healthy(container) -> bool:
        container.reload()
        return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

    in_flight: list[int] = []

    def slow_request():
        in_flight.append(lab.get("/api/version?cache=bypass", timeout=30).status_code)

    def slow_queries_from(container) -> int:
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][f"{lab.project}_default"]["IPAddress"]
        return int(
            lab.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                f"AND query = 'SELECT slow_version()' AND client_addr = '{ip}'"
            )
        )

    def reaches(container) -> bool:
        return slow_queries_from(container) >= 1

    def roll():
        for container in replicas:
            # Slow requests (1 s, cache=bypass) in flight on the replica when it is
            # stopped: gunicorn finishes them (drain), Nginx does not cut them.
            slow: list[threading.Thread] = []
            for _attempt in range(5):
                batch = [threading.Thread(target=slow_request) for _ in range(4)]
                for thread in batch:
                    thread.start()
                slow += batch
                try:
                    wait_until(partial(reaches, container), 0.8, interval=0.05)
                    break
                except TimeoutError:
                    for thread in batch:
                        thread.join(30)
            else:
                pytest.fail(f"no slow request reached {container.name}")
            mark = time.monotonic()
            container.stop(timeout=35)
            for thread in slow:
                thread.join(30)
            wait_for_requests(traffic_holder[0], mark, 20)
            container.start()
            wait_until(
                partial(healthy, container),
                60,
                interval=0.25,
                message=f"{container.name} healthy again",
            )
            # Nginx's watcher reloads within UPSTREAM_WATCH_SECONDS of the change.
            wait_for_requests(traffic_holder[0], time.monotonic(), 20)

    traffic_holder: list[Traffic] = []
    warm(lab)
    traffic = Traffic(lab.base_url, PATHS, threads=THREADS, rate=RATE, duration=240)
    traffic_holder.append(traffic)
    with traffic:
        wait_for_requests(traffic, traffic.t0, 10)
        fault_start = time.monotonic()
        roll()
        fault_end = time.monotonic()
        wait_until(
            lambda: all(healthy(c) for c in replicas) and ready(lab),
            60,
            message="both replicas healthy",
        )
        recovered_at = time.monotonic()
        wait_for_requests(traffic, recovered_at, AFTER_RECOVERY)
    check(
        "app-rolling-restart",
        traffic,
        fault_start,
        fault_end,
        recovered_at,
        extra={"slow_in_flight": in_flight},
    )
    assert len(in_flight) >= 8 and set(in_flight) == {200}, in_flight
    assert parse_json(lab.get("/readyz"))["status"] == "ready"


def _answers(call: Any) -> bool:
    try:
        call()
    except RuntimeError:  # redis-cli could not connect yet
        return False
    return True
