"""``python -m loadtest.bench hits``: hit throughput at saturation (closed loop, wrk).

    python -m loadtest.bench hits --rounds 5 --duration 10s --publish docs/results

Starts the bench stack (:mod:`loadtest.benchstack`: every system under the
lab's CPU limits, one Redis, one PostgreSQL) and loads each system with wrk,
a closed loop (``--connections``, default 16, on ``--threads`` 2) on
``/api/version``. Two modes: ``pure-hit`` (TTL far above the run) and
``expiry`` (TTL = the query time, ``--delay``, so rounds cross expiries). In
each mode every system is warmed (its key filled, then ``--warmup`` of
discarded load), then measured in ``--rounds`` rounds of ``--duration``; each
round runs every system once, in a shuffled order, so machine noise falls on
all alike. The report gives the mean of the rounds with its 95 % confidence
interval, and ratios to Flask-Caching and the ceiling from the paired rounds
(geometric means, their intervals on the logarithms: never below 0).
CPU seconds per 1,000 requests come from each container's cgroup (Redis' CPU
apart: it serves every system), with the share of CFS periods in which a
container was throttled. Every round records the machine's load
(:mod:`loadtest.machine`); a disturbed round is flagged.

After the pure-hit rounds it measures tier 1's invalidation lag
(:mod:`loadtest.lag`), ``--lag-writes`` times.

``--topology cluster`` (or ``both``) adds the lab's Valkey Cluster
(loadtest/benchstack/compose.cluster.yaml: compose.cluster.yaml's three
primaries and three replicas) and the three strategies once more on it, at the
app's port (``two-tier@cluster``, ``swr@cluster``, ``cache-aside@cluster``),
measured in the same shuffled rounds; the cache's CPU is then the sum over
every node. ``both`` puts single node and cluster side by side in one table.

With ``--target URL`` it measures that running deployment alone, open loop
or closed loop from this host (:mod:`loadtest.target`): the Flask-Caching and
ceiling rows come from a local run.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import benchstack, hitreport, images, lag, machine, target, wrkrun
from .benchstack import (
    BASELINE,
    BY_NAME,
    CEILING,
    TOPOLOGIES,
    System,
    add_stack_arguments,
    chosen_systems,
    request_timeout,
    systems_of,
)
from .cliargs import comma_names, command_line, optional_duration, parse_duration
from .errors import BenchError
from .hitreport import summarize
from .stack import IMAGE_TAG, ROOT, Stack
from .wrkrun import run_wrk

PURE_HIT_TTL = 86_400  # CACHE_TTL_SECONDS in pure-hit mode: far above any run
MODES = ("pure-hit", "expiry")
DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


def say(message: str) -> None:
    print(f"bench hits: {message}", flush=True)


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
    load: dict = field(default_factory=dict)


def measure(
    stack: Stack,
    system: System,
    mode: str,
    round_: int,
    args: argparse.Namespace,
    found: dict,
    meter: machine.LoadMeter,
) -> Sample:
    watched = {name: found[name] for name in (*system.cpu_services, *system.cache_services)}
    url = f"http://{system.service}:{system.port}{benchstack.PATH}"
    before = benchstack.cpu(watched)
    meter.start()
    summary = run_wrk(
        stack, url, args.duration, args.connections, args.threads, request_timeout(args.delay)
    )
    load = meter.stop()
    after = benchstack.cpu(watched)
    used = {name: after[name] - before[name] for name in watched}
    throttled = [
        share for name in system.cpu_services if (share := used[name].throttled_share) is not None
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
        cpu_s_per_1k=sum(used[name].seconds for name in system.cpu_services) * per_1k,
        redis_cpu_s_per_1k=sum(used[name].seconds for name in system.cache_services) * per_1k,
        throttled=max(throttled) if throttled else None,
        cpu_by_container_s={name: round(value.seconds, 4) for name, value in used.items()},
        load=load.to_dict(),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per mode; each runs every system once"
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
        type=optional_duration,
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
        "--before",
        default=None,
        metavar="REF",
        help="also measure the lab as it was at this git ref (the `before` system)",
    )
    parser.add_argument(
        "--lag-writes",
        type=int,
        default=50,
        help="writes for the invalidation-lag measurement (0: skip; default 50)",
    )
    add_stack_arguments(parser)
    target.add_arguments(parser)
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy hits.md, hits.json and hits.png here (e.g. docs/results)",
    )


def report(args: argparse.Namespace, data: dict, results_dir: Path) -> int:
    files = hitreport.write_report(results_dir, data)
    print(hitreport.render_tables(data), flush=True)
    say(f"report: {files['markdown']}")
    if args.publish:
        hitreport.publish(results_dir, args.publish)
        say(f"published hits.md, hits.json and hits.png to {args.publish}")
    return 0


def run_target(args: argparse.Namespace) -> int:
    """``--target URL``: the deployment alone, as it is (its TTL, its CPU, its cache),
    wrk from this host; no CPU or lag figures (its containers are not ours)."""
    found = target.describe(args)
    say(f"target {found.url}: strategy {found.strategy} ({found.where['label']})")
    image = images.build_wrk(f"cachelab/wrk:bench-{IMAGE_TAG}")
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    name = f"target ({found.strategy})"
    url = found.url + benchstack.PATH
    meter = found.meter()
    samples = []
    if args.warmup > 0:
        wrkrun.run_wrk_image(image, url, args.warmup, args.connections, args.threads, 30)
    for round_ in range(1, args.rounds + 1):
        meter.start()
        summary = wrkrun.run_wrk_image(
            image, url, args.duration, args.connections, args.threads, 30
        )
        load = meter.stop()
        requests_ = int(summary["requests"])
        seconds = summary["duration_us"] / 1e6
        latency = summary["latency_us"]
        sample = Sample(
            system=name,
            mode="as-deployed",
            round=round_,
            requests=requests_,
            seconds=seconds,
            rps=requests_ / seconds if seconds else 0.0,
            p50_ms=latency["p50"] / 1000,
            p99_ms=latency["p99"] / 1000,
            max_ms=latency["max"] / 1000,
            errors=sum(summary["errors"].values()),
            cpu_s_per_1k=float("nan"),
            redis_cpu_s_per_1k=float("nan"),
            throttled=None,
            load=load.to_dict(),
        )
        samples.append(sample)
        say(f"round {round_}/{args.rounds}: {sample.rps:,.0f} req/s, p99 {sample.p99_ms:.1f} ms")
    data: dict = {
        "modes": {
            "as-deployed": {"ttl_s": "the target's", "rows": {name: summarize(samples, [], [])}}
        },
        "samples": [asdict(s) for s in samples],
        "checks": {},
        "lag": None,
    }
    loads = [s.load for s in samples]
    data["meta"] = {
        **machine.run_meta(started, found.where, args.machine, loads),
        "engine": "the target's",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "delay_s": args.delay,
        "before": None,
        "systems": [name],
        "labels": {name: f"{found.url} ({found.strategy})"},
        "cpu_services": {name: []},
        "command": command_line(
            getattr(args, "argv", None), ["hits"], ("--machine", "--results", "--project")
        ),
    }
    return report(args, data, results_dir)


def run(args: argparse.Namespace) -> int:
    if args.target:
        return run_target(args)
    if args.rounds < 1 or args.connections < 1 or args.threads < 1:
        raise BenchError("--rounds, --connections and --threads must be at least 1")
    if args.connections < args.threads:
        raise BenchError("wrk needs at least one connection per thread")
    if not 1 <= args.delay <= 10:
        # The TTL in expiry mode is a whole number of seconds; the lab's lock wait is 15 s.
        raise BenchError("--delay must be between 1 and 10 seconds")
    if "expiry" in args.modes and args.duration < 2 * args.delay:
        raise BenchError(
            "--duration must be at least twice --delay in expiry mode, so "
            "that a round outlasts a refill"
        )
    args.systems = args.systems or systems_of(args.topology)
    systems = chosen_systems(args)
    cluster = any(s.clustered for s in systems)
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    stack = benchstack.open_stack(args, cluster)
    rng = random.Random(args.seed)
    meter = machine.LoadMeter(stack.docker, stack.project)
    data: dict = {"modes": {}, "samples": [], "checks": {}, "lag": None}
    say(f"building and starting the bench stack (project {args.project})")
    try:
        benchstack.build(stack, systems, ("wrk",), args.reuse)
        if args.before:
            say(f"building the `before` images from {args.before}")
            data["before_commit"] = benchstack.build_before(stack, args.before)
        for mode in args.modes:
            ttl = PURE_HIT_TTL if mode == "pure-hit" else max(1, round(args.delay))
            data["modes"][mode] = {"ttl_s": ttl}
            say(f"{mode}: CACHE_TTL_SECONDS={ttl}, SLOW_QUERY_SECONDS={args.delay:g}")
            stack.overrides = {"CACHE_TTL_SECONDS": str(ttl)}
            benchstack.up(stack, systems, ("wrk",))
            stack.flush_cache()
            if cluster and any(not s.clustered for s in systems):
                stack.redis_cli("FLUSHALL", node="redis")  # the single node beside the cluster
            found = benchstack.containers(stack, systems)
            for system in systems:
                data["checks"].setdefault(mode, {})[system.name] = benchstack.warm(
                    stack, system, args.delay
                )
                if args.warmup > 0:
                    run_wrk(
                        stack,
                        f"http://{system.service}:{system.port}{benchstack.PATH}",
                        args.warmup,
                        args.connections,
                        args.threads,
                        request_timeout(args.delay),
                    )
            for round_ in range(1, args.rounds + 1):
                order = systems[:]
                rng.shuffle(order)
                for system in order:
                    sample = measure(stack, system, mode, round_, args, found, meter)
                    data["samples"].append(asdict(sample))
                    say(
                        f"{mode} round {round_}/{args.rounds} {system.name}: "
                        f"{sample.rps:,.0f} req/s, p50 {sample.p50_ms:.1f} ms, "
                        f"p99 {sample.p99_ms:.1f} ms, {sample.cpu_s_per_1k:.3f} CPU s/1k, "
                        f"{sample.errors} errors"
                        + (" (machine disturbed)" if sample.load.get("disturbed") else "")
                    )
            for system in systems:  # still answering correctly after the load
                benchstack.check_answer(stack, system, timeout=args.delay + 30)
            for name, field_ in (("two-tier@app", "lag"), ("two-tier@cluster", "lag_cluster")):
                if mode == "pure-hit" and args.lag_writes > 0 and name in args.systems:
                    say(f"{name}: invalidation lag over {args.lag_writes} writes")
                    data[field_] = lag.invalidation_lag(
                        stack,
                        benchstack.base_url(stack, BY_NAME[name]),
                        args.lag_writes,
                        clustered=BY_NAME[name].clustered,
                    )
                    say(
                        f"invalidation lag p50 {data[field_]['p50_ms']:.2f} ms, "
                        f"p99 {data[field_]['p99_ms']:.2f} ms"
                    )
    finally:
        if args.keep:
            say(f"left running: Compose project {args.project}")
        else:
            benchstack.down(stack)

    for mode in args.modes:
        by_system = {
            system.name: [
                Sample(**s)
                for s in data["samples"]
                if s["mode"] == mode and s["system"] == system.name
            ]
            for system in systems
        }
        data["modes"][mode]["rows"] = {
            name: summarize(samples, by_system.get(BASELINE, []), by_system.get(CEILING, []))
            for name, samples in by_system.items()
        }
    where = machine.local_description()
    loads = [s["load"] for s in data["samples"]]
    data["meta"] = {
        **machine.run_meta(started, where, args.machine, loads),
        "engine": args.engine,
        "topology": args.topology,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "delay_s": args.delay,
        "before": args.before,
        "systems": [s.name for s in systems],
        "labels": {s.name: s.label for s in systems},
        "cpu_services": {s.name: list(s.cpu_services) for s in systems},
        "command": command_line(
            getattr(args, "argv", None), ["hits"], ("--machine", "--results", "--project")
        ),
    }
    return report(args, data, results_dir)


def load(results_dir: Path) -> dict:
    return json.loads((results_dir / "hits.json").read_text())
