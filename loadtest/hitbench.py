"""Hit throughput: our caching strategies against Flask-Caching and a static page.

    python -m loadtest.bench hits --rounds 5 --duration 10s --publish docs/results

Starts its own stack (compose.yaml + loadtest/hits/compose.yaml, Compose
project ``cachelab-bench`` unless ``--project``), on one Redis (Valkey by
default) and one PostgreSQL, with every system under test limited to 1 CPU:

* ``cache-aside``, ``swr`` and ``two-tier`` (the default): one app container
  each (own ``CACHE_NAMESPACE``), measured at the app's port;
* ``two-tier+nginx``: the default strategy through the lab's own Nginx (the
  same two-tier container behind it; CPU counted for both containers);
* ``flask-caching``: loadtest/baseline/app.py, ``@cache.cached`` on Redis,
  gunicorn 2 workers x 4 threads -- what a user would pick instead;
* ``ceiling``: Nginx serving a static copy of the answer.

wrk (the ``wrk`` service, on the stack's network) sends a closed-loop load
(``--connections``, default 16, on ``--threads`` 2) to ``/api/version``. Two
modes: ``pure-hit`` (TTL far above the run) and ``expiry`` (TTL = the query
time, ``--delay``, so rounds cross expiries). In each mode every system is
warmed (its key filled, then ``--warmup`` of discarded load), then measured in
``--rounds`` rounds of ``--duration``; each round runs every system once, in
a shuffled order, so machine noise falls on all alike, and the report gives
the median of the rounds. CPU seconds per 1,000 requests come from each
container's cgroup counter (``cpu_stats.cpu_usage.total_usage`` from Docker)
read before and after its round; Redis' CPU is reported apart (it serves every
system).

After the pure-hit rounds it measures tier 1's invalidation lag: a SET made
outside the app (this process, on Redis' published port) against entries both
workers serve from memory, then the time until no request to the app returns
the old value (as tests/test_caching_engine.py does), ``--lag-writes`` times.

``--topology cluster`` (or ``both``) adds the lab's Valkey Cluster
(loadtest/hits/compose.cluster.yaml: compose.cluster.yaml's three primaries and
three replicas) and the three strategies once more on it (``two-tier@cluster``,
``swr@cluster``, ``cache-aside@cluster``), measured in the same shuffled rounds;
the cache's CPU is then the sum over every node. ``both`` puts single node and
cluster side by side in one table.

Writes ``results/<UTC time>/hits.md``, ``hits.json`` and ``hits.png``;
``--publish DIR`` copies the table and chart there. The stack is removed at
the end unless ``--keep``. Every wait and every load is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from . import hitreport
from .stack import CLUSTER_NODES, ROOT, Stack, engine_image, wait_until

BENCH_FILE = ROOT / "loadtest" / "hits" / "compose.yaml"
CLUSTER_FILES = (ROOT / "compose.cluster.yaml", ROOT / "loadtest" / "hits" / "compose.cluster.yaml")
TOPOLOGIES = ("single", "cluster", "both")
DEFAULT_PROJECT = "cachelab-bench"
PATH = "/api/version"
PURE_HIT_TTL = 86_400  # CACHE_TTL_SECONDS in pure-hit mode: far above any run
MODES = ("pure-hit", "expiry")


@dataclass(frozen=True)
class System:
    name: str
    label: str
    service: str  # the service wrk loads (and whose published port the checks use)
    port: int  # its port on the stack's network
    cpu_services: tuple[str, ...]  # whose CPU counts for it
    ours: bool = True
    cache_services: tuple[str, ...] = ("redis",)  # the cache it uses (its CPU reported apart)


SYSTEMS = (
    System("ceiling", "Nginx static page (ceiling)", "ceiling", 8080, ("ceiling",), ours=False),
    System(
        "two-tier+nginx",
        "two-tier (default), through the lab's Nginx",
        "nginx",
        8080,
        ("nginx", "app"),
    ),
    System("two-tier", "two-tier (default), app port", "app", 8000, ("app",)),
    System("swr", "swr, app port", "app-swr", 8000, ("app-swr",)),
    System("cache-aside", "cache-aside, app port", "app-cache-aside", 8000, ("app-cache-aside",)),
    System(
        "flask-caching",
        "Flask-Caching (`@cache.cached`, Redis)",
        "baseline",
        8000,
        ("baseline",),
        ours=False,
    ),
    System(
        "two-tier@cluster",
        "two-tier on the Valkey Cluster, app port",
        "app-cluster",
        8000,
        ("app-cluster",),
        cache_services=CLUSTER_NODES,
    ),
    System(
        "swr@cluster",
        "swr on the Valkey Cluster, app port",
        "app-swr-cluster",
        8000,
        ("app-swr-cluster",),
        cache_services=CLUSTER_NODES,
    ),
    System(
        "cache-aside@cluster",
        "cache-aside on the Valkey Cluster, app port",
        "app-cache-aside-cluster",
        8000,
        ("app-cache-aside-cluster",),
        cache_services=CLUSTER_NODES,
    ),
)
BY_NAME = {system.name: system for system in SYSTEMS}


def systems_of(topology: str) -> list[str]:
    """The default systems of a topology (the ceiling in every one)."""
    return [
        s.name
        for s in SYSTEMS
        if topology == "both"
        or s.name == "ceiling"
        or (s.cache_services == CLUSTER_NODES) == (topology == "cluster")
    ]


BASELINE, CEILING = "flask-caching", "ceiling"


class HitBenchError(RuntimeError):
    """The run cannot go on; printed without a traceback."""


def say(message: str) -> None:
    print(f"bench hits: {message}", flush=True)


# -- the stack -------------------------------------------------------------------------
def make_stack(project: str, delay: float, engine: str, cluster: bool = False) -> Stack:
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "APP_DB_PASSWORD": secrets.token_hex(16),
        "CACHE_IMAGE": engine_image(engine),
        "APP_IMAGE": "cachelab/app:bench",
        "NGINX_APP_IMAGE": "cachelab/nginx:bench",
        "SLOW_QUERY_SECONDS": f"{delay:g}",
        "WRITE_API_TOKEN": "",
    }
    files = [ROOT / "compose.yaml", BENCH_FILE, *(CLUSTER_FILES if cluster else ())]
    return Stack(project=project, files=files, env=env)


def services_for(systems: list[System]) -> list[str]:
    names = {service for system in systems for service in (system.service, *system.cpu_services)}
    return sorted(names) + ["wrk"]


def base_url(stack: Stack, system: System) -> str:
    return f"http://127.0.0.1:{stack.port(system.service, system.port)}"


def check_answer(stack: Stack, system: System, timeout: float) -> dict:
    """GET the page from the host until it answers 200 with a PostgreSQL version."""
    url = base_url(stack, system) + PATH

    def answered():
        response = requests.get(url, timeout=timeout)
        body = response.json()
        if response.status_code == 200 and str(body.get("version", "")).startswith("PostgreSQL"):
            return {
                "status": response.status_code,
                "version": body["version"],
                "x_cache": response.headers.get("X-Cache"),
                "item": body.get("item"),
            }
        return None

    return wait_until(answered, timeout, interval=0.2, message=f"{system.name} to answer {PATH}")


def warm(stack: Stack, system: System, delay: float) -> dict:
    """Fill the key, then wait until a request is served from the cache."""
    first = check_answer(stack, system, timeout=delay + 60)
    if system.ours:
        url = base_url(stack, system) + PATH
        session = requests.Session()
        wait_until(
            lambda: session.get(url, timeout=10).headers.get("X-Cache") == "HIT",
            delay + 30,
            interval=0.05,
            message=f"{system.name} to serve a HIT",
        )
    return first


# -- measuring ---------------------------------------------------------------------------
def cpu_counters(container) -> tuple[int, int, int]:
    """CPU used (ns), and CFS periods / throttled periods of its cgroup so far."""
    cpu = container.stats(stream=False, one_shot=True)["cpu_stats"]
    throttling = cpu.get("throttling_data") or {}
    return (
        int(cpu["cpu_usage"]["total_usage"]),
        int(throttling.get("periods", 0)),
        int(throttling.get("throttled_periods", 0)),
    )


def run_wrk(stack: Stack, system: System, args: argparse.Namespace, seconds: float) -> dict:
    """One wrk run inside the wrk container; wrk's summary (report.lua) as a dict."""
    url = f"http://{system.service}:{system.port}{PATH}"
    # A request may wait for the slow query (expiry mode): count it, do not time it out.
    request_timeout = max(10.0, args.delay * 3 + 5)
    command = [
        "timeout",
        f"{seconds + request_timeout + 30:.0f}",
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        f"--timeout={request_timeout:g}s",
        "-s",
        "/bench/report.lua",
        url,
    ]
    code, output = stack.container("wrk").exec_run(command)
    text = output.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise HitBenchError(f"wrk against {url} failed (exit {code}): {text[-1500:]}")
    return json.loads(lines[-1])


@dataclass
class Sample:
    """One system's round."""

    system: str
    mode: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_s_per_1k: float
    redis_cpu_s_per_1k: float
    throttled: float | None  # share of its CFS periods a container of the system was throttled in
    cpu_by_container_s: dict[str, float] = field(default_factory=dict)


def measure(
    stack: Stack, system: System, mode: str, round_: int, args: argparse.Namespace, containers: dict
) -> Sample:
    watched = list(system.cpu_services) + list(system.cache_services)
    before = {name: cpu_counters(containers[name]) for name in watched}
    summary = run_wrk(stack, system, args, args.duration)
    after = {name: cpu_counters(containers[name]) for name in watched}
    used = {name: (after[name][0] - before[name][0]) / 1e9 for name in watched}
    throttled = [
        (after[name][2] - before[name][2]) / (after[name][1] - before[name][1])
        for name in system.cpu_services
        if after[name][1] > before[name][1]
    ]
    requests_ = int(summary["requests"])
    seconds = summary["duration_us"] / 1e6
    per_1k = 1000 / requests_ if requests_ else float("nan")
    latency = summary["latency_us"]
    return Sample(
        system=system.name,
        mode=mode,
        round=round_,
        requests=requests_,
        seconds=seconds,
        rps=requests_ / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=sum(summary["errors"].values()),
        cpu_s_per_1k=sum(used[name] for name in system.cpu_services) * per_1k,
        redis_cpu_s_per_1k=sum(used[name] for name in system.cache_services) * per_1k,
        throttled=max(throttled) if throttled else None,
        cpu_by_container_s={name: round(value, 4) for name, value in used.items()},
    )


def median_row(samples: list[Sample]) -> dict:
    def med(attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in samples)

    return {
        "rounds": len(samples),
        "requests": sum(s.requests for s in samples),
        "errors": sum(s.errors for s in samples),
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "max_ms": max(s.max_ms for s in samples),
        "cpu_s_per_1k": med("cpu_s_per_1k"),
        "redis_cpu_s_per_1k": med("redis_cpu_s_per_1k"),
        "throttled": statistics.median(throttled)
        if (throttled := [s.throttled for s in samples if s.throttled is not None])
        else None,
    }


def add_ratios(rows: dict[str, dict]) -> None:
    """Throughput as a multiple of Flask-Caching's and as a share of the ceiling's."""
    base, ceiling = rows.get(BASELINE), rows.get(CEILING)
    for row in rows.values():
        row["x_flask_caching"] = row["rps"] / base["rps"] if base and base["rps"] else None
        row["of_ceiling"] = row["rps"] / ceiling["rps"] if ceiling and ceiling["rps"] else None
        row["cpu_x_flask_caching"] = (
            row["cpu_s_per_1k"] / base["cpu_s_per_1k"] if base and base["cpu_s_per_1k"] else None
        )


# -- invalidation lag -------------------------------------------------------------------
def invalidation_lag(
    stack: Stack, writes: int, connections: int = 8, system_name: str = "two-tier"
) -> dict:
    """The test's method (tests/test_caching_engine.py), at the two-tier app's port,
    over ``connections`` keep-alive connections so both workers answer (on the
    cluster: the SET goes to the primary that owns the key)."""
    system = BY_NAME[system_name]
    url = base_url(stack, system) + PATH
    sessions = [requests.Session() for _ in range(connections)]
    barrier = threading.Barrier(connections)

    def connect(session):  # open the connections together: the workers accept them in turn
        barrier.wait(timeout=10)
        return session.get(url, timeout=10).json()

    threads = [threading.Thread(target=connect, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    key = sessions[0].get(url, timeout=10).json()["key"]
    client = (
        stack.node_client(stack.owner_of(key).service)
        if system.cache_services == CLUSTER_NODES
        else stack.node_client("redis")
    )
    lags: list[float] = []
    round_trips: list[float] = []  # the polls' own duration: the measurement's resolution
    try:
        for index in range(writes):
            wait_until(
                lambda: all(
                    s.get(url, timeout=5).headers["Cache-Status"].endswith("memory; hit")
                    for s in sessions
                ),
                10,
                interval=0.02,
                message="every connection served from memory",
            )
            raw = client.get(key)
            assert raw is not None, f"{key} vanished"
            entry = json.loads(raw)
            marker = f"written-outside-{index}"
            entry["value"]["version"] = marker
            entry["fence"] += 1
            client.set(key, json.dumps(entry), px=client.pttl(key))
            written = time.perf_counter()
            last_old, deadline, turn = written, written + 2.0, 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                version = sessions[turn % connections].get(url, timeout=5).json()["version"]
                round_trips.append(time.perf_counter() - started)
                turn += 1
                if version != marker:
                    last_old = started
                elif started - last_old > 0.05 and turn >= 2 * connections:
                    break  # 50 ms, and two passes over every connection, of new values only
            lags.append(last_old - written)
    finally:
        client.close()
        for session in sessions:
            session.close()
    lags.sort()
    return {
        "writes": len(lags),
        "connections": connections,
        "p50_ms": percentile(lags, 50) * 1000,
        "p99_ms": percentile(lags, 99) * 1000,
        "max_ms": lags[-1] * 1000 if lags else None,
        "stale_writes": sum(1 for lag in lags if lag > 0),
        "poll_p50_ms": percentile(round_trips, 50) * 1000,
    }


def percentile(values: list[float], q: float) -> float:
    from .traffic import percentile as nearest_rank

    return nearest_rank(values, q)


# -- the run ----------------------------------------------------------------------------
def machine_description() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()} "
        f"({platform.machine()}), Docker Compose stack on the same host"
    )


def comma_names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """``a,b`` -> ["a", "b"], each one of ``allowed`` (an argparse type; also bench's)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser, parse_duration) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds per mode; each runs every system once (default 5)",
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=10.0,
        help="wrk run per system and round, e.g. 10s (default 10s)",
    )
    parser.add_argument(
        "--warmup",
        default=3.0,
        type=lambda text: 0.0 if text.strip() in ("0", "0s") else parse_duration(text),
        help="discarded load per system before the rounds, 0 for none (default 3s)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="wrk connections: the closed-loop concurrency (default 16)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--delay",
        type=float,
        default=2.0,
        help="SLOW_QUERY_SECONDS, and the TTL in expiry mode (default 2)",
    )
    parser.add_argument(
        "--modes",
        type=lambda t: comma_names(t, MODES, "mode"),
        default=list(MODES),
        help="pure-hit,expiry (default both)",
    )
    parser.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="single",
        help="single: one Redis (default); cluster: the Valkey Cluster; both: side by side",
    )
    parser.add_argument(
        "--systems",
        type=lambda t: comma_names(t, tuple(BY_NAME), "system"),
        default=None,
        help="default: the topology's, " + ",".join(systems_of("single")) + " for single",
    )
    parser.add_argument(
        "--lag-writes",
        type=int,
        default=50,
        help="writes for the invalidation-lag measurement (0: skip; default 50)",
    )
    parser.add_argument(
        "--engine",
        choices=("valkey", "redis"),
        default="valkey",
        help="cache engine image (default valkey)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    parser.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"Compose project of the bench stack (default {DEFAULT_PROJECT})",
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench stack running")
    parser.add_argument(
        "--results", type=Path, default=None, help="output folder (default results/<UTC timestamp>)"
    )
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy hits.md and hits.png here (e.g. docs/results)",
    )
    parser.add_argument(
        "--machine",
        default=None,
        help="machine description for the report (default: from this host)",
    )


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.connections < 1 or args.threads < 1:
        raise HitBenchError("--rounds, --connections and --threads must be at least 1")
    if args.connections < args.threads:
        raise HitBenchError("wrk needs at least one connection per thread")
    if not 1 <= args.delay <= 10:
        # The TTL in expiry mode is a whole number of seconds; the lab's lock wait is 15 s.
        raise HitBenchError("--delay must be between 1 and 10 seconds")
    if "expiry" in args.modes and args.duration < 2 * args.delay:
        raise HitBenchError(
            "--duration must be at least twice --delay in expiry mode, so "
            "that a round outlasts a refill"
        )
    args.systems = args.systems or systems_of(args.topology)
    systems = [BY_NAME[name] for name in args.systems]
    cluster = any(s.cache_services == CLUSTER_NODES for s in systems)
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    stack = make_stack(args.project, args.delay, args.engine, cluster)
    rng = random.Random(args.seed)
    data: dict = {"modes": {}, "samples": [], "checks": {}, "lag": None}
    say(f"building and starting the bench stack (project {args.project})")
    try:
        stack.compose("build", "--quiet", *services_for(systems), timeout=1500)
        for mode in args.modes:
            ttl = PURE_HIT_TTL if mode == "pure-hit" else max(1, round(args.delay))
            data["modes"][mode] = {"ttl_s": ttl}
            say(f"{mode}: CACHE_TTL_SECONDS={ttl}, SLOW_QUERY_SECONDS={args.delay:g}")
            stack.overrides = {"CACHE_TTL_SECONDS": str(ttl)}
            stack.up(*services_for(systems))
            stack.flush_cache()
            if cluster and any(s.cache_services == ("redis",) for s in systems):
                stack.redis_cli("FLUSHALL", node="redis")  # the single node beside the cluster
            containers = {
                name: stack.container(name)
                for system in systems
                for name in (*system.cpu_services, *system.cache_services)
            }
            for system in systems:
                data["checks"].setdefault(mode, {})[system.name] = warm(stack, system, args.delay)
                if args.warmup > 0:
                    run_wrk(stack, system, args, args.warmup)
            for round_ in range(1, args.rounds + 1):
                order = systems[:]
                rng.shuffle(order)
                for system in order:
                    sample = measure(stack, system, mode, round_, args, containers)
                    data["samples"].append(asdict(sample))
                    say(
                        f"{mode} round {round_}/{args.rounds} {system.name}: "
                        f"{sample.rps:,.0f} req/s, p50 {sample.p50_ms:.1f} ms, "
                        f"p99 {sample.p99_ms:.1f} ms, {sample.cpu_s_per_1k:.3f} CPU s/1k, "
                        f"{sample.errors} errors"
                    )
            for system in systems:  # still answering correctly after the load
                check_answer(stack, system, timeout=args.delay + 30)
            for name, field_ in (("two-tier", "lag"), ("two-tier@cluster", "lag_cluster")):
                if mode == "pure-hit" and args.lag_writes > 0 and name in args.systems:
                    say(f"{name}: invalidation lag over {args.lag_writes} writes")
                    data[field_] = invalidation_lag(stack, args.lag_writes, system_name=name)
                    say(
                        f"invalidation lag p50 {data[field_]['p50_ms']:.2f} ms, "
                        f"p99 {data[field_]['p99_ms']:.2f} ms"
                    )
    finally:
        if args.keep:
            say(
                f"left running: docker compose -p {args.project} "
                f"-f compose.yaml -f {BENCH_FILE.relative_to(ROOT)} ps"
            )
        else:
            stack.down()

    for mode in args.modes:
        rows = {}
        for system in systems:
            samples = [
                Sample(**s)
                for s in data["samples"]
                if s["mode"] == mode and s["system"] == system.name
            ]
            rows[system.name] = median_row(samples)
        add_ratios(rows)
        data["modes"][mode]["rows"] = rows
    data["meta"] = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M"),
        "machine": args.machine or machine_description(),
        "engine": args.engine,
        "topology": args.topology,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "delay_s": args.delay,
        "systems": [s.name for s in systems],
        "labels": {s.name: s.label for s in systems},
        "cpu_services": {s.name: list(s.cpu_services) for s in systems},
        "command": "python -m loadtest.bench "
        + " ".join(
            shlex.quote(a)
            for a in without_options(
                getattr(args, "argv", None) or ["hits"], ("--machine", "--results", "--project")
            )
        ),
    }
    files = hitreport.write_report(results_dir, data)
    print(hitreport.render_tables(data), flush=True)
    say(f"report: {files['markdown']}")
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        (args.publish / "hits.md").write_text(hitreport.render_markdown(data))
        shutil.copy2(files["chart"], args.publish / files["chart"].name)
        say(f"published hits.md and {files['chart'].name} to {args.publish}")
    return 0


def without_options(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """argv minus the given options and their values (machine-specific paths and names;
    also bench's)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(option + "=" for option in options)):
            out.append(arg)
    return out
