"""``python -m loadtest.bench latency``: the same Locust load against each strategy.

    python -m loadtest.bench latency --rounds 3 --duration 60s --users 20 --delay 10

For each strategy (default: every one in ``cachelab.config.STRATEGIES``) the
running lab is reconfigured with ``docker compose up -d --wait``
(``CACHE_STRATEGY``, and ``SLOW_QUERY_SECONDS`` which recreates PostgreSQL,
keeping its volume), Redis is flushed so every strategy starts cold, and
Locust runs headless on this machine against the published Nginx port. Then
``results/<UTC time>/`` gets each run's requests and Locust's HTML report,
``summary.md`` / ``summary.json`` (requests/s, p50/p95/p99/max, failures,
slow queries counted by PostgreSQL, hit ratio from the app's and Nginx's
counters) and PNG charts. The original strategy, delay and TTL are put back
at the end, also after an error.

``--rounds N`` runs every strategy once per round, strategies interleaved (so a
slow minute of the machine falls on one round of each, not on one strategy),
each run in ``<strategy>/round-<i>/``; the table gives each figure as the mean
of the rounds with its 95 % interval (:func:`loadtest.latencyreport.combine_rounds`).

With ``--target URL`` it measures a running deployment it cannot reconfigure
(:mod:`loadtest.target`): the strategy the target reports, once per round.

Thresholds (``--max-fail-ratio``, ``--max-p95-ms``) are checked by the
locustfile when Locust quits; any breach makes this command exit 1. The p95
limit applies to the cached strategies only (the uncached baseline is slow by
design). Exit code 2: the lab is not running or the run could not be made.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from cachelab.config import STRATEGIES

from . import lab, latencyreport, locustcsv, machine, target
from .cliargs import comma_names, command_line, parse_duration
from .dbload import QuerySampler
from .errors import BenchError
from .latencyreport import CACHE_RESULT_NAMES, QUERIES_CSV, RunResult
from .locustrun import headless_locust, run_locust
from .stack import ROOT, Stack, wait_until

SCENARIOS = {
    "hot": ["HotKeyUser"],
    "zipf": ["ZipfUser"],
    "cold": ["ColdStartUser"],
    "mixed": ["HotKeyUser", "ZipfUser", "ColdStartUser"],
}
DESCRIPTION = (
    "Run the same headless Locust load against each cache strategy of the running lab "
    "and write a Markdown summary, JSON and charts."
)


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategies",
        type=lambda text: comma_names(text, STRATEGIES, "strategy"),
        default=list(STRATEGIES),
        help=f"comma-separated, in order (default: {','.join(STRATEGIES)})",
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=60.0,
        help="Locust run time per strategy, e.g. 60s, 2m (default 60s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds; each runs every strategy once (default 1; 3 for a 95 %% interval)",
    )
    parser.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    parser.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second (default: all users within 1 s)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=10.0,
        help="SLOW_QUERY_SECONDS for the runs (default 10, the lab's)",
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="CACHE_TTL_SECONDS for the runs (default: keep the lab's)",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="hot",
        help="locustfile user classes to run (default hot: one key)",
    )
    parser.add_argument("--wait-min", type=float, default=0.1, help="think time min, s")
    parser.add_argument("--wait-max", type=float, default=0.5, help="think time max, s")
    parser.add_argument("--zipf-keys", type=int, default=1000, help="ZipfUser key space")
    parser.add_argument(
        "--max-fail-ratio",
        type=float,
        default=None,
        help="fail (exit 1) when a run's failure ratio exceeds this (0-1)",
    )
    parser.add_argument(
        "--max-p95-ms",
        type=float,
        default=None,
        help="fail (exit 1) when a cached strategy's p95 exceeds this (ms)",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="output folder (default results/<UTC timestamp>)"
    )
    parser.add_argument(
        "--project",
        default=None,
        help="Compose project of the lab (default cachelab, compose.yaml's name)",
    )
    target.add_arguments(parser)
    parser.add_argument(
        "--machine",
        default=None,
        help="machine description for the report (default: from this host)",
    )
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy summary.md and the charts here (e.g. docs/results)",
    )


def locust_command(args: argparse.Namespace, host: str, run_dir: Path, cached: bool) -> list[str]:
    command = headless_locust(
        host, args.users, args.spawn_rate or float(args.users), args.duration
    ) + [
        "--csv",
        str(run_dir / locustcsv.CSV_PREFIX),
        "--html",
        str(run_dir / locustcsv.HTML_REPORT),
        "--requests-out",
        str(run_dir / locustcsv.REQUESTS_CSV),
        "--wait-min",
        f"{args.wait_min:g}",
        "--wait-max",
        f"{args.wait_max:g}",
        "--zipf-keys",
        str(args.zipf_keys),
    ]
    if args.max_fail_ratio is not None:
        command += ["--max-fail-ratio", f"{args.max_fail_ratio:g}"]
    if args.max_p95_ms is not None and cached:
        command += ["--max-p95-ms", f"{args.max_p95_ms:g}"]
    return command + SCENARIOS[args.scenario]


class Counts:
    """The lab's own counters around a run: PostgreSQL's slow queries, the app's
    lookups and Nginx's edge answers (None where the target hides them)."""

    def __init__(self, stack: Stack | None, strategy: str) -> None:
        self.stack, self.strategy = stack, strategy

    def read(self, at_least: int = 0, timeout: float = 30) -> tuple:
        if self.stack is None:
            return None, {}, {}
        return (
            self.stack.settled_slow_calls(at_least=at_least, timeout=timeout),
            lab.lookups(self.stack, self.strategy, CACHE_RESULT_NAMES),
            self.stack.edge_counts(),
        )


def settled_edge_counts(stack: Stack, before: dict, requests: int) -> dict:
    """Nginx's counts once they cover the run's requests (its log is summed every
    EDGE_METRICS_SECONDS), within a bound."""

    def covered() -> dict:
        now = stack.edge_counts()
        return now if sum(now.values()) - sum(before.values()) >= requests else {}

    try:
        return wait_until(covered, 30, interval=0.5, message="Nginx's counts to settle")
    except TimeoutError:
        return stack.edge_counts()  # reported as counted; the table says what it saw


def run_strategy(
    stack: Stack | None,
    host: str,
    args: argparse.Namespace,
    strategy: str,
    results_dir: Path,
    apps: int,
    label: str,
    meter: machine.LoadMeter | None = None,
    directory: str | None = None,
) -> RunResult:
    if stack is not None and not args.target:
        settings = {"CACHE_STRATEGY": strategy, "SLOW_QUERY_SECONDS": f"{args.delay:g}"}
        if args.ttl is not None:
            settings["CACHE_TTL_SECONDS"] = str(args.ttl)
        say(f"{label}: configuring " + " ".join(f"{k}={v}" for k, v in settings.items()))
        lab.apply_settings(stack, settings, apps)
        stack.flush_cache()
        host = stack.base_url  # Nginx recreated for a new strategy has a new ephemeral port
    counts = Counts(stack, strategy)
    calls0, lookups0, edge0 = counts.read()

    directory = directory or strategy
    run_dir = results_dir / directory
    run_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(args, host, run_dir, cached=strategy != "none")
    say(
        f"{label}: Locust {args.users} users for {args.duration:g} s "
        f"(scenario {args.scenario}) -> {run_dir}"
    )
    meter = meter or machine.LoadMeter(
        stack.docker if stack else None, stack.project if stack else None
    )
    started = time.time()
    meter.start()
    if stack is not None:
        sampler = QuerySampler(stack)
        with sampler:
            code, output = run_locust(command, run_dir, args.duration, label, say)
        sampler.write(run_dir / QUERIES_CSV, origin=started)
    else:
        code, output = run_locust(command, run_dir, args.duration, label, say)
    load = meter.stop()
    if not (run_dir / locustcsv.REQUESTS_CSV).exists():
        raise BenchError(
            f"{label}: Locust wrote no requests (exit {code}); last output:\n" + output[-2000:]
        )
    result = RunResult(strategy=strategy, directory=directory, duration_s=args.duration)
    result.started_epoch = started
    result.fill(run_dir)
    result.load = load.to_dict()
    if stack is not None:
        # Queries cut off when Locust stopped still finish in PostgreSQL: let them land.
        calls1, lookups1, edge1 = counts.read(at_least=calls0 or 0, timeout=args.delay + 30)
        result.slow_calls = calls1 - calls0
        result.cache_results = {k: max(0.0, lookups1[k] - lookups0[k]) for k in CACHE_RESULT_NAMES}
        if strategy == "edge":  # Nginx's counts lag its log by a few seconds
            edge1 = settled_edge_counts(stack, edge0, result.requests)
        result.edge_results = {k: max(0.0, edge1.get(k, 0) - edge0.get(k, 0)) for k in edge1}
        ttl = (
            args.ttl
            if args.ttl is not None
            else lab.current_settings(stack).get("CACHE_TTL_SECONDS", "10")
        )
        result.ttl_s = float(ttl)
    else:  # a --target: the clients' view (X-Cache, X-Edge-Cache of every answer)
        requests = locustcsv.read_requests(run_dir / locustcsv.REQUESTS_CSV)
        result.cache_results, result.edge_results = locustcsv.served(requests)
    result.locust_exit_code = code
    result.threshold_breaches = re.findall(r"threshold exceeded: (.*)", output)
    if code != 0 and not result.threshold_breaches:
        result.threshold_breaches = [f"Locust exited with code {code} (see {run_dir}/locust.log)"]
    hit = result.hit_ratio
    say(
        f"{label}: {result.requests} requests, {result.rps:.1f}/s, p50 {result.p50_ms:g} ms, "
        f"p95 {result.p95_ms:g} ms, {result.failures} failures, {result.slow_calls} slow calls, "
        f"hit ratio {'n/a' if hit is None else f'{hit:.1%}'}"
        + (" (machine disturbed)" if load.disturbed else "")
    )
    return result


def _placed(
    args: argparse.Namespace, round_: int, strategy: str, index: int, count: int
) -> tuple[str, str]:
    """A run's label in the log and its folder under the results."""
    label = f"[{index}/{count}] {strategy}"
    if args.rounds == 1:
        return label, strategy
    return f"round {round_}/{args.rounds} {label}", f"{strategy}/round-{round_}"


def run(args: argparse.Namespace, stack: Stack | None = None) -> int:
    if args.users < 1:
        raise BenchError("--users must be at least 1")
    if args.delay < 0:
        raise BenchError("--delay must not be negative")
    if args.rounds < 1:
        raise BenchError("--rounds must be at least 1")
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.target:
        found = target.describe(args)
        say(f"target {found.url}: strategy {found.strategy} ({found.where['label']})")
        every_run = []
        for round_ in range(1, args.rounds + 1):
            label, directory = _placed(args, round_, found.strategy, 1, 1)
            every_run.append(
                run_strategy(
                    None,
                    found.url,
                    args,
                    found.strategy,
                    results_dir,
                    1,
                    label,
                    found.meter(),
                    directory,
                )
            )
        results = [latencyreport.combine_rounds(every_run)]
        where, host, apps, original = found.where, found.url, None, {}
    else:
        stack = stack or lab.lab_stack(args.project)
        say(f"checking the lab (Compose project '{stack.project}')")
        lab.check_stack_up(stack)
        original = lab.current_settings(stack)
        apps = lab.app_count(stack)
        host = stack.base_url
        where = machine.local_description()
        say(
            f"lab at {host}: {apps} app container(s), current settings "
            + " ".join(f"{k}={v}" for k, v in sorted(original.items()))
        )
        runs: dict[str, list[RunResult]] = {strategy: [] for strategy in args.strategies}
        try:
            for round_ in range(1, args.rounds + 1):
                for index, strategy in enumerate(args.strategies, 1):
                    label, directory = _placed(args, round_, strategy, index, len(args.strategies))
                    runs[strategy].append(
                        run_strategy(
                            stack, host, args, strategy, results_dir, apps, label, None, directory
                        )
                    )
        finally:
            say("restoring " + " ".join(f"{k}={v}" for k, v in sorted(original.items())))
            try:
                lab.apply_settings(stack, original, apps)
            except Exception as exc:  # noqa: BLE001 - report, but keep the first error
                say(f"could not restore the original settings: {exc}")
        every_run = [r for found in runs.values() for r in found]
        results = [latencyreport.combine_rounds(found) for found in runs.values()]

    # Not `import locust`: that monkey-patches this process with gevent.
    from importlib.metadata import version

    ttl = args.ttl if args.ttl is not None else original.get("CACHE_TTL_SECONDS", "10")
    loads = [r.load for r in every_run]
    meta = {
        **machine.run_meta(started, where, args.machine, loads),
        "locust_version": version("locust"),
        "scenario": args.scenario,
        "user_classes": SCENARIOS[args.scenario],
        "users": args.users,
        "spawn_rate": f"{args.spawn_rate or args.users:g}",
        "duration_s": args.duration,
        "rounds": args.rounds,
        "wait_min": args.wait_min,
        "wait_max": args.wait_max,
        "delay_s": args.delay,
        "ttl": f"{ttl} s",
        "app_containers": apps if apps is not None else "n/a",
        "host": host,
        "strategies": [r.strategy for r in results],
        "command": command_line(
            getattr(args, "argv", None), ["latency"], ("--machine", "--results", "--project")
        ),
    }
    files = latencyreport.write_report(results_dir, meta, results)
    print(latencyreport.summary_table(results), flush=True)
    for strategy, ratio in latencyreport.p50_ratios(results).items():
        say(f"p50 none / p50 {strategy}: {ratio:,.0f}x")
    say(f"report: {files['summary']}")
    if args.publish:
        latencyreport.publish(results_dir, meta, results, args.publish)
        say(f"published summary.md and charts to {args.publish}")
    breaches = [f"{r.strategy}: {b}" for r in results for b in r.threshold_breaches]
    if breaches:
        say("FAILED thresholds: " + "; ".join(breaches))
        return 1
    return 0
