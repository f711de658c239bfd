"""The benchmarks: ``latency`` (Locust per strategy) and ``hits`` (hit throughput).

    python -m loadtest.bench latency --duration 60s --users 20 --delay 10
    python -m loadtest.bench hits --rounds 5 --duration 10s

``hits`` brings up a stack of its own and compares our strategies with
Flask-Caching and a static page under equal CPU limits: see
:mod:`loadtest.hitbench`. Without a subcommand the arguments go to
``latency`` (its flags are the command's original ones).

``latency`` runs the same headless Locust load against each cache strategy
of the running lab, then writes one report.

For each strategy (default: none, cache-aside, swr, two-tier) the lab is reconfigured
with ``docker compose up -d --wait`` (``CACHE_STRATEGY``, and
``SLOW_QUERY_SECONDS`` which recreates PostgreSQL, keeping its volume), Redis
is flushed so every strategy starts cold, and Locust runs headless on this
machine against the published Nginx port. Then ``results/<UTC time>/`` gets
each run's Locust CSVs and HTML report, ``summary.md`` / ``summary.json``
(requests/s, p50/p95/p99/max, failures, slow_version calls counted by
PostgreSQL, hit ratio from the app's metrics) and PNG charts. The original
strategy, delay and TTL are put back at the end, also after an error.

Thresholds (``--max-fail-ratio``, ``--max-p95-ms``) are checked by the
locustfile when Locust quits; any breach makes this command exit 1. The p95
limit applies to the cached strategies only (the uncached baseline is slow by
design). Exit code 2: the lab is not running or the run could not be made.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from . import hitbench, staleness
from .report import CACHE_RESULT_NAMES as CACHE_RESULTS
from .report import (
    CSV_PREFIX,
    HTML_REPORT,
    QUERIES_CSV,
    RunResult,
    fill_from_csv,
    p50_ratios,
    summary_table,
    write_report,
)
from .stack import ROOT, Stack, metric

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STRATEGIES = ("none", "cache-aside", "swr", "two-tier")
SCENARIOS = {
    "hot": ["HotKeyUser"],
    "zipf": ["ZipfUser"],
    "cold": ["ColdStartUser"],
    "mixed": ["HotKeyUser", "ZipfUser", "ColdStartUser"],
}


class BenchError(RuntimeError):
    """The benchmark cannot run (stack down, bad option): printed without a traceback."""


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def parse_duration(text: str) -> float:
    """'60s', '2m', '1.5m', '1m30s', '90' -> seconds (also used by loadtest.soak)."""
    number = r"(\d+(?:\.\d+)?)"
    match = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 2m, 1m30s)")
    hours, minutes, seconds = match.groups()
    total = float(hours or 0) * 3600 + float(minutes or 0) * 60 + float(seconds or 0)
    if total < 1:
        raise argparse.ArgumentTypeError("duration must be at least 1 s")
    return total


def _strategies(text: str) -> list[str]:
    return hitbench.comma_names(text, STRATEGIES, "strategy")


SUBCOMMANDS = ("latency", "hits", "staleness")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="The lab's benchmarks: `latency` (Locust against each strategy of the "
        "running lab) and `hits` (hit throughput against Flask-Caching and a "
        "static page, on a stack of its own).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{latency,hits,staleness}"
    )
    add_latency_arguments(
        commands.add_parser(
            "latency",
            help="Locust load per strategy of the running lab (latency, hit ratio)",
            description="Run the same headless Locust load against each cache strategy of the "
            "running lab and write CSV/HTML reports, a Markdown summary and charts.",
        )
    )
    hitbench.add_arguments(
        commands.add_parser(
            "hits",
            help="hit throughput of each strategy vs Flask-Caching and a static page",
            description=hitbench.__doc__.split("\n\n")[0],
        ),
        parse_duration,
    )
    staleness.add_arguments(
        commands.add_parser(
            "staleness",
            help="staleness, read-your-writes and DB load per invalidation mode",
            description=staleness.DESCRIPTION,
        ),
        parse_duration,
    )
    return parser


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategies",
        type=_strategies,
        default=list(STRATEGIES),
        help="comma-separated, in order (default: none,cache-aside,swr,two-tier)",
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=60.0,
        help="Locust run time per strategy, e.g. 60s, 2m (default 60s)",
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


# -- the stack ----------------------------------------------------------------
def check_stack_up(stack: Stack) -> None:
    """Raise BenchError with what to do when the lab is not answering."""
    start = "start it with `docker compose up -d --wait` in the repository root"
    try:
        nginx = [c for c in stack.containers("nginx") if c.status == "running"]
    except Exception as exc:  # noqa: BLE001 - Docker itself is unreachable
        raise BenchError(f"cannot reach Docker ({exc}); is the Docker engine running?") from exc
    if not nginx:
        raise BenchError(
            f"the lab is not running: no running nginx container in Compose "
            f"project '{stack.project}'; {start}"
        )
    try:
        stack.wait_ready(timeout=20)
    except Exception as exc:  # noqa: BLE001
        raise BenchError(
            f"the lab in project '{stack.project}' does not answer /readyz "
            f"through Nginx ({exc}); check `docker compose ps` and the logs, "
            f"or {start}"
        ) from exc


def current_settings(stack: Stack) -> dict[str, str]:
    """The settings the bench changes, as the running containers have them."""
    settings: dict[str, str] = {}
    app = stack.container("app")
    env = dict(item.split("=", 1) for item in app.attrs["Config"]["Env"] if "=" in item)
    # The app gets SLOW_QUERY_SECONDS too (checked against its timeouts); db-init
    # stores it in the database.
    for name in ("CACHE_STRATEGY", "CACHE_TTL_SECONDS", "SLOW_QUERY_SECONDS"):
        if env.get(name):
            settings[name] = env[name]
    return settings


def apply_settings(stack: Stack, settings: dict[str, str], app_count: int) -> None:
    """`docker compose up -d --wait` for nginx and what it depends on, with ``settings``.

    Only services whose configuration changed are recreated (the app for a new
    strategy, PostgreSQL for a new delay); Locust's own services are left alone.
    """
    saved = stack.overrides
    stack.overrides = {**saved, **settings}
    try:
        stack.up("nginx", scale={"app": app_count})
    finally:
        stack.overrides = saved
    stack.wait_ready(timeout=90)


def cache_results(stack: Stack, strategy: str) -> dict[str, float]:
    samples = stack.app_metrics()
    return {
        result: metric(samples, "cachelab_cache_requests_total", strategy=strategy, result=result)
        for result in CACHE_RESULTS
    }


# -- one run --------------------------------------------------------------------
def headless_locust(host: str, users: int, spawn_rate: float, seconds: float) -> list[str]:
    """The start of every headless Locust run the benchmarks make (from this host).

    Failures are reported, not fatal: only thresholds set the exit code."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-H",
        host,
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "-t",
        f"{math.ceil(seconds)}s",
        "--only-summary",
        "--exit-code-on-error",
        "0",
    ]


def locust_environment(**extra: str) -> dict[str, str]:
    """This process' environment without LOCUST_* (a lab's Locust settings must not
    leak into a benchmark's run), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def locust_command(args: argparse.Namespace, host: str, run_dir: Path, cached: bool) -> list[str]:
    command = headless_locust(
        host, args.users, args.spawn_rate or float(args.users), args.duration
    ) + [
        "--csv",
        str(run_dir / CSV_PREFIX),
        "--csv-full-history",
        "--html",
        str(run_dir / HTML_REPORT),
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


def run_locust(command: list[str], run_dir: Path, duration: float, label: str) -> tuple[int, str]:
    """Run Locust, printing progress; bounded by the run time plus a grace period."""
    log_path = run_dir / "locust.log"
    deadline = time.monotonic() + duration + 60
    started = time.monotonic()
    next_report = started + 10
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir, env=locust_environment()
        )
        try:
            while process.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    process.kill()
                    process.wait(10)
                    raise BenchError(
                        f"{label}: Locust did not finish within "
                        f"{duration + 60:.0f} s; see {log_path}"
                    )
                if now >= next_report:
                    say(f"  {label}: {now - started:.0f}/{duration:.0f} s")
                    next_report += 10
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text(errors="replace")
    return process.returncode, output


def run_strategy(
    stack: Stack,
    args: argparse.Namespace,
    strategy: str,
    results_dir: Path,
    app_count: int,
    label: str,
) -> RunResult:
    settings = {"CACHE_STRATEGY": strategy, "SLOW_QUERY_SECONDS": f"{args.delay:g}"}
    if args.ttl is not None:
        settings["CACHE_TTL_SECONDS"] = str(args.ttl)
    say(f"{label}: configuring " + " ".join(f"{k}={v}" for k, v in settings.items()))
    apply_settings(stack, settings, app_count)
    stack.flush_cache()
    before_calls = stack.settled_slow_calls(at_least=0)
    before_results = cache_results(stack, strategy)

    run_dir = results_dir / strategy
    run_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(args, stack.base_url, run_dir, cached=strategy != "none")
    say(
        f"{label}: Locust {args.users} users for {args.duration:g} s "
        f"(scenario {args.scenario}) -> {run_dir}"
    )
    sampler = QuerySampler(stack)
    with sampler:
        code, output = run_locust(command, run_dir, args.duration, label)
    sampler.write(run_dir / QUERIES_CSV, run_dir / f"{CSV_PREFIX}_stats_history.csv")
    if not (run_dir / f"{CSV_PREFIX}_stats.csv").exists():
        raise BenchError(
            f"{label}: Locust wrote no CSV (exit {code}); last output:\n" + output[-2000:]
        )

    # Queries cut off when Locust stopped still finish in PostgreSQL: let them land.
    after_calls = stack.settled_slow_calls(at_least=before_calls, timeout=args.delay + 30)
    after_results = cache_results(stack, strategy)
    result = fill_from_csv(RunResult(strategy=strategy, directory=strategy), run_dir)
    result.slow_calls = after_calls - before_calls
    result.duration_s = args.duration
    result.ttl_s = float(
        args.ttl if args.ttl is not None else current_settings(stack).get("CACHE_TTL_SECONDS", "10")
    )
    result.cache_results = {
        k: max(0.0, after_results[k] - before_results[k]) for k in CACHE_RESULTS
    }
    result.locust_exit_code = code
    result.threshold_breaches = re.findall(r"threshold exceeded: (.*)", output)
    if code != 0 and not result.threshold_breaches:
        result.threshold_breaches = [f"Locust exited with code {code} (see {run_dir}/locust.log)"]
    hit = result.hit_ratio
    say(
        f"{label}: {result.requests} requests, {result.rps:.1f}/s, p50 {result.p50_ms:g} ms, "
        f"p95 {result.p95_ms:g} ms, {result.failures} failures, {result.slow_calls} slow calls, "
        f"hit ratio {'n/a' if hit is None else f'{hit:.1%}'}"
    )
    return result


class QuerySampler:
    """PostgreSQL's count of finished slow queries, once a second during a run
    (for the queries/s chart and the TTL-expiry marks)."""

    def __init__(self, stack: Stack, interval: float = 1.0) -> None:
        self.stack, self.interval = stack, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-sampler", daemon=True)

    def __enter__(self) -> QuerySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), self.stack.slow_calls()))
            except Exception:  # noqa: BLE001 - a missed sample is a gap in the chart
                pass
            if self._stop.wait(self.interval):
                return

    def write(self, path: Path, history_csv: Path) -> None:
        """Samples as seconds since Locust's first history row (the charts' origin)."""
        origin = self.samples[0][0] if self.samples else 0.0
        if history_csv.exists():
            with history_csv.open(newline="") as handle:
                first = next(csv.DictReader(handle), None)
            if first and first.get("Timestamp"):
                origin = float(first["Timestamp"])
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["elapsed_s", "queries"])
            base = self.samples[0][1] if self.samples else 0
            for at, calls in self.samples:
                out.writerow([f"{at - origin:.2f}", calls - base])


# -- the whole benchmark ------------------------------------------------------------
def machine_description() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()} "
        f"({platform.machine()}), Python {platform.python_version()}, "
        f"Docker Compose stack on the same host"
    )


def run(args: argparse.Namespace, stack: Stack | None = None) -> int:
    if args.users < 1:
        raise BenchError("--users must be at least 1")
    if args.delay < 0:
        raise BenchError("--delay must not be negative")
    stack = stack or (
        Stack.running_lab()
        if args.project in (None, "cachelab")
        else Stack(project=args.project, files=[ROOT / "compose.yaml"], env={})
    )
    say(f"checking the lab (Compose project '{stack.project}')")
    check_stack_up(stack)
    started = datetime.now(UTC)
    results_dir = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    results_dir.mkdir(parents=True, exist_ok=True)
    original = current_settings(stack)
    app_count = max(1, len([c for c in stack.containers("app") if c.status == "running"]))
    say(
        f"lab at {stack.base_url}: {app_count} app container(s), current settings "
        + " ".join(f"{k}={v}" for k, v in sorted(original.items()))
    )

    results: list[RunResult] = []
    try:
        for index, strategy in enumerate(args.strategies, 1):
            label = f"[{index}/{len(args.strategies)}] {strategy}"
            results.append(run_strategy(stack, args, strategy, results_dir, app_count, label))
    finally:
        say("restoring " + " ".join(f"{k}={v}" for k, v in sorted(original.items())))
        try:
            apply_settings(stack, original, app_count)
        except Exception as exc:  # noqa: BLE001 - report, but keep the first error
            say(f"could not restore the original settings: {exc}")

    # Not `import locust`: that monkey-patches this process with gevent.
    from importlib.metadata import version

    locust_version = version("locust")
    ttl = args.ttl if args.ttl is not None else original.get("CACHE_TTL_SECONDS", "10")
    meta = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M"),
        "machine": args.machine or machine_description(),
        "locust_version": locust_version,
        "scenario": args.scenario,
        "user_classes": SCENARIOS[args.scenario],
        "users": args.users,
        "spawn_rate": f"{args.spawn_rate or args.users:g}",
        "duration_s": args.duration,
        "wait_min": args.wait_min,
        "wait_max": args.wait_max,
        "delay_s": args.delay,
        "ttl": f"{ttl} s",
        "app_containers": app_count,
        "host": stack.base_url,
        "strategies": args.strategies,
        "command": "python -m loadtest.bench "
        + " ".join(
            shlex.quote(a)
            for a in hitbench.without_options(
                getattr(args, "argv", None) or ["latency"], ("--machine",)
            )
        ),
    }
    files = write_report(results_dir, meta, results)
    print(summary_table(results), flush=True)
    for strategy, ratio in p50_ratios(results).items():
        say(f"p50 none / p50 {strategy}: {ratio:,.0f}x")
    say(f"report: {files['summary']}")
    if args.publish:
        publish(results_dir, meta, results, args.publish)
        say(f"published summary.md and charts to {args.publish}")
    breaches = [f"{r.strategy}: {b}" for r in results for b in r.threshold_breaches]
    if breaches:
        say("FAILED thresholds: " + "; ".join(breaches))
        return 1
    return 0


def publish(results_dir: Path, meta: dict, results: list[RunResult], target: Path) -> None:
    """Copy the summary (without links to the git-ignored per-run files) and the charts."""
    from .report import CHARTS, render_markdown

    target.mkdir(parents=True, exist_ok=True)
    for filename in CHARTS.values():
        shutil.copy2(results_dir / filename, target / filename)
    (target / "summary.md").write_text(render_markdown(meta, results, links=False))
    shutil.copy2(results_dir / "summary.json", target / "summary.json")


def main(argv: list[str] | None = None, stack: Stack | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv = ["latency", *argv]  # the command's original form: latency flags only
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command == "hits":
            return hitbench.run(args)
        if args.command == "staleness":
            return staleness.run(args, stack)
        return run(args, stack)
    except (BenchError, hitbench.HitBenchError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
