"""``python -m loadtest.bench capacity``: the highest rate each system serves with p99
under a target, open loop.

    python -m loadtest.bench capacity --p99-ms 25 --repeats 3 --step 10s --publish docs/results

Users ask "how many requests per second can I serve with p99 under 25 ms?".
For each system of the bench stack (:mod:`loadtest.benchstack`, every one
under the lab's CPU limits) this command:

1. measures its **closed-loop** saturated rate S with wrk (a short run: the
   rate the system reaches when every connection sends again at once; it is
   also the "closed loop" figure the report compares with);
2. steps an **open-loop** arrival rate up a ladder of fractions of S
   (``--fractions``, default 0.1, 0.2 ... 1.0) with k6
   (:mod:`loadtest.k6run`), each step ``--repeats`` times, the systems
   interleaved in a shuffled order, until a step's p99 (mean of its repeats)
   passes ``--p99-ms`` or a request fails or is dropped;
3. a system that missed already at its first rate steps down by thirds
   (``--descents``) until a rate meets the target; then the command
   bisects between the last step that met the target and the first that did
   not (``--refine`` times): the **knee**, the highest rate that met it;
4. runs every system at **half its knee** (the p99 a system shows when it
   has headroom).

Every step records the machine's load (a disturbed step is flagged) and the
load generator's own CPU: a system whose steps fail because k6 cannot send
fast enough is reported as limited by the generator, not by itself.

The cache server's own ceiling comes from ``valkey-benchmark`` (or
``redis-benchmark``) against the same Redis container: **closed loop**, GET
of one small key, ``--repeats`` runs, labelled so.

With ``--target URL`` it measures that running deployment alone (no
reconfiguring, no closed-loop probe unless ``--closed-rate`` is given; the
ladder starts at ``--start-rate``), from this host.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime
from pathlib import Path

from . import benchstack, cacheceiling, capacityreport, k6run, machine, target
from .benchstack import BY_NAME, System, add_stack_arguments, chosen_systems, request_timeout
from .cliargs import comma_names, comma_numbers, command_line, parse_duration
from .errors import BenchError
from .ladder import climb, say
from .stack import ROOT, Stack
from .wrkrun import run_wrk

PURE_HIT_TTL = 86_400
DEFAULT_SYSTEMS = ("ceiling", "edge", "two-tier", "swr", "cache-aside", "flask-caching")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DESCRIPTION = (
    "The highest open-loop rate each system serves with p99 under a target (k6), "
    "its throughput-latency curve and knee, with 95 % intervals; the cache server's "
    "own closed-loop ceiling."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--p99-ms", type=float, default=25.0, help="the latency target: p99 in ms (default 25)"
    )
    parser.add_argument(
        "--systems",
        type=lambda t: comma_names(t, tuple(BY_NAME), "system"),
        default=list(DEFAULT_SYSTEMS),
        help="default: " + ",".join(DEFAULT_SYSTEMS),
    )
    parser.add_argument(
        "--before", default=None, metavar="REF", help="also measure the lab at this git ref"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per step, for the 95 %% interval (default 3)"
    )
    parser.add_argument(
        "--step",
        type=parse_duration,
        default=10.0,
        help="length of one open-loop run, e.g. 10s (default 10s)",
    )
    parser.add_argument(
        "--fractions",
        type=lambda t: comma_numbers(t, "--fractions", 0.01, 2.0),
        default=list(DEFAULT_FRACTIONS),
        help="the ladder, as fractions of the closed-loop rate (default 0.1,0.2,...,1.0)",
    )
    parser.add_argument(
        "--refine", type=int, default=2, help="bisections between the last met and first missed"
    )
    parser.add_argument(
        "--descents",
        type=int,
        default=3,
        help="steps down by thirds when a system misses at its first rate (default 3)",
    )
    parser.add_argument(
        "--probe",
        type=parse_duration,
        default=5.0,
        help="closed-loop probe per system, e.g. 5s (default 5s)",
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections of the probe (default 16)"
    )
    parser.add_argument("--delay", type=float, default=2.0, help="SLOW_QUERY_SECONDS (default 2)")
    parser.add_argument(
        "--cache-ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the cache server's own ceiling (valkey-benchmark; default on)",
    )
    parser.add_argument(
        "--cache-requests",
        type=int,
        default=200_000,
        help="GETs per valkey-benchmark run (default 200000)",
    )
    parser.add_argument(
        "--start-rate",
        type=float,
        default=100.0,
        help="--target only: the ladder's first rate (then x1.5 each step)",
    )
    target.add_arguments(parser)
    add_stack_arguments(parser)
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy capacity.md, capacity.json and the chart here (e.g. docs/results)",
    )


class Runner:
    """One open-loop step of one system: k6 and the meters around it."""

    def __init__(self, k6, stack: Stack | None, url_of, containers: dict, meter=None) -> None:
        self.k6, self.stack, self.url_of, self.containers = k6, stack, url_of, containers
        self.meter = meter or machine.LoadMeter(
            stack.docker if stack else None, stack.project if stack else None
        )

    def step(self, system: str, rate: float, seconds: float) -> dict:
        generator = self.containers.get("k6")
        before = benchstack.cpu({"k6": generator}) if generator is not None else {}
        self.meter.start()
        found = self.k6.run(self.url_of(system), rate, seconds)
        load = self.meter.stop()
        result = found.to_dict()
        result["load"] = load.to_dict()
        if generator is not None:
            used = benchstack.cpu({"k6": generator})["k6"] - before["k6"]
            result["generator_cores"] = round(used.seconds / max(load.seconds, 1e-6), 3)
        return result


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.refine < 0 or args.descents < 0:
        raise BenchError("--repeats must be at least 1, --refine and --descents at least 0")
    if args.p99_ms <= 0:
        raise BenchError("--p99-ms must be positive")
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    data: dict = {"p99_target_ms": args.p99_ms, "systems": {}, "cache_ceiling": None}
    if args.target:
        found = target.describe(args)
        say(f"target {found.url}: strategy {found.strategy} ({found.where['label']})")
        runner = Runner(k6run.DockerK6(), None, lambda _name: found.url, {}, found.meter())
        name = f"target ({found.strategy})"
        ladder = [round(args.start_rate * 1.5**i) for i in range(16)]
        levels = climb(runner, [name], {name: ladder}, args, rng)
        data["systems"][name] = {
            "label": f"{found.url} ({found.strategy})",
            "closed_rps": None,
            "levels": [lv.to_dict(args.p99_ms) for lv in levels[name]],
        }
        where = found.where
    else:
        where = machine.local_description()
        systems = chosen_systems(args)
        stack = benchstack.open_stack(args)
        stack.overrides = {"CACHE_TTL_SECONDS": str(PURE_HIT_TTL)}
        say(f"building and starting the bench stack (project {args.project})")
        try:
            benchstack.build(stack, systems, ("wrk",), args.reuse)
            if args.before:
                say(f"building the `before` images from {args.before}")
                data["before_commit"] = benchstack.build_before(stack, args.before)
            benchstack.up(stack, systems, ("wrk", "k6"))
            stack.flush_cache()
            found_containers = benchstack.containers(stack, systems)
            found_containers["k6"] = stack.container("k6")
            closed = {}
            for system in systems:
                data.setdefault("checks", {})[system.name] = benchstack.warm(
                    stack, system, args.delay
                )
                summary = run_wrk(
                    stack,
                    _inside(system) + benchstack.PATH,
                    args.probe,
                    args.connections,
                    2,
                    request_timeout(args.delay),
                )
                closed[system.name] = summary["requests"] / (summary["duration_us"] / 1e6)
                say(f"{system.name}: closed loop {closed[system.name]:,.0f} req/s")
            runner = Runner(
                k6run.ContainerK6(found_containers["k6"]),
                stack,
                lambda name: _inside(BY_NAME[name]),
                found_containers,
            )
            rates = {
                name: [max(1.0, round(closed[name] * f)) for f in sorted(args.fractions)]
                for name in closed
            }
            levels = climb(runner, list(closed), rates, args, rng)
            for system in systems:
                data["systems"][system.name] = {
                    "label": system.label,
                    "closed_rps": closed[system.name],
                    "levels": [lv.to_dict(args.p99_ms) for lv in levels[system.name]],
                }
            if args.cache_ceiling:
                say("the cache server's own ceiling (valkey-benchmark, closed loop)")
                data["cache_ceiling"] = cacheceiling.measure(
                    stack, args.repeats, args.cache_requests
                )
        finally:
            if args.keep:
                say(f"left running: Compose project {args.project}")
            else:
                benchstack.down(stack)
    capacityreport.add_summary(data)
    loads = [
        step["load"]
        for system in data["systems"].values()
        for level in system["levels"]
        for step in level["steps"]
    ]
    data["meta"] = {
        **machine.run_meta(started, where, args.machine, loads),
        "engine": args.engine,
        "repeats": args.repeats,
        "step_s": args.step,
        "probe_s": args.probe,
        "connections": args.connections,
        "fractions": sorted(args.fractions),
        "descents": args.descents,
        "delay_s": args.delay,
        "before": args.before,
        "target": args.target,
        "start_rate": args.start_rate,
        "generator": "k6 (constant-arrival-rate), "
        + ("from this host" if args.target else "in a container on the stack's network"),
        "command": command_line(
            getattr(args, "argv", None), ["capacity"], ("--machine", "--results", "--project")
        ),
    }
    files = capacityreport.write_report(results_dir, data)
    print(capacityreport.render_table(data), flush=True)
    say(f"report: {files['markdown']}")
    if args.publish:
        capacityreport.publish(results_dir, args.publish)
        say(f"published capacity.md, capacity.json and capacity.png to {args.publish}")
    return 0


def _inside(system: System) -> str:
    return f"http://{system.service}:{system.port}"


def load(results_dir: Path) -> dict:
    return json.loads((results_dir / "capacity.json").read_text())
