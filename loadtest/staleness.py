"""``python -m loadtest.bench staleness``: what each invalidation mode costs, judged from outside.

    python -m loadtest.bench staleness --rounds 3 --duration 30s --delay 1 --ttl 10

Runs the Locust writer and reader scenarios (loadtest/locustfile.py,
``ItemWriter`` and ``ItemReader``, judged by :mod:`loadtest.ledger`) once per
variant in each of ``--rounds`` rounds -- one variant at a time, so the slow
queries PostgreSQL counts (pg_stat_statements) belong to that variant; every
round runs every variant, so drift on the machine falls on all alike -- and
reports each figure as the mean of the rounds with its 95 % interval
(:func:`loadtest.stalenessreport.combine_rounds`). It writes
``results/<UTC time>/staleness.md``, ``.json`` and a chart (``--publish
docs/results`` copies them). The ``edge`` variant runs with the lab on
``CACHE_STRATEGY=edge`` (Nginx's micro-cache in front of write-through): its
staleness is bounded by ``EDGE_CACHE_SECONDS``, plus the wait for the key's
next request after its copy expired (which starts the refresh and still gets
the old copy), plus one refresh, and it gives
no read-your-writes. The lab must be running; the command sets a
``WRITE_API_TOKEN`` for its runs and puts the lab back.

With ``--target URL`` it measures a running deployment as it is: it needs the
deployment's write token (``WRITE_API_TOKEN`` in this environment), cannot
count database queries, and runs the ``edge`` variant only when the target
runs the edge strategy.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from . import lab, machine, stalenessreport, target
from .cliargs import command_line, parse_duration
from .errors import BenchError
from .ledger import STRATEGY_OF, VARIANTS, VariantStats, summarize
from .locustrun import headless_locust, locust_environment, run_locust
from .stack import ROOT, Stack

DESCRIPTION = (
    "Run the Locust writer and reader scenarios against each invalidation mode "
    "of the running lab (and the edge tier) and report staleness, read-your-writes "
    "violations, database queries/s and write latency per mode."
)


def say(message: str) -> None:
    print(f"staleness: {message}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, in order (default: {','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=30.0,
        help="Locust run time per variant (default 30s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds; each runs every variant once (default 1; 3 for a 95 %% interval)",
    )
    parser.add_argument("--readers", type=int, default=8, help="reader users (default 8)")
    parser.add_argument("--writers", type=int, default=2, help="writer users (default 2)")
    parser.add_argument(
        "--delay", type=float, default=1.0, help="SLOW_QUERY_SECONDS for the runs (default 1)"
    )
    parser.add_argument("--ttl", type=int, default=10, help="CACHE_TTL_SECONDS (default 10)")
    parser.add_argument(
        "--edge-seconds",
        type=int,
        default=1,
        help="EDGE_CACHE_SECONDS for the edge variant (default 1)",
    )
    parser.add_argument(
        "--payload-bytes", type=int, default=256, help="size of each written payload (default 256)"
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy staleness.md, staleness.json and the chart here (e.g. docs/results)",
    )
    parser.add_argument("--project", default=None, help="Compose project of the lab")
    target.add_arguments(parser)
    parser.add_argument("--machine", default=None, help="machine description for the report")


def chosen(args: argparse.Namespace) -> list[str]:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise BenchError(
            f"unknown variant {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}"
        )
    # Those on the lab's own strategy first, then each other strategy's: one
    # reconfiguration per strategy.
    return sorted(variants, key=lambda v: (STRATEGY_OF.get(v, ""), variants.index(v)))


def run(args: argparse.Namespace, stack: Stack | None = None) -> int:
    variants = chosen(args)
    started = datetime.now(UTC)
    out = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    if args.rounds < 1:
        raise BenchError("--rounds must be at least 1")
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    if args.target:
        token = os.environ.get("WRITE_API_TOKEN", "")
        if not token:
            raise BenchError(
                "--target needs the deployment's write token in WRITE_API_TOKEN "
                "(the staleness benchmark writes items)"
            )
        found = target.describe(args)
        say(f"target {found.url}: strategy {found.strategy} ({found.where['label']})")
        skipped = [v for v in variants if v == "edge" and found.strategy != "edge"]
        for variant in skipped:
            say(f"{variant}: skipped (the target runs {found.strategy}, not edge)")
        for round_ in range(1, args.rounds + 1):
            for variant in (v for v in variants if v not in skipped):
                say(f"round {round_}/{args.rounds} {variant}: {args.duration:g} s")
                runs[variant].append(
                    run_variant(None, found.url, args, variant, token, out, found.meter())
                )
        where = found.where
    else:
        stack = stack or lab.lab_stack(args.project)
        lab.check_stack_up(stack)
        original = lab.current_settings(stack)
        token = os.environ.get("WRITE_API_TOKEN") or os.urandom(16).hex()
        apps = lab.app_count(stack)
        base = {
            "SLOW_QUERY_SECONDS": f"{args.delay:g}",
            "CACHE_TTL_SECONDS": str(args.ttl),
            "WRITE_API_TOKEN": token,
            "EDGE_CACHE_SECONDS": str(args.edge_seconds),
        }
        current = None
        try:
            for round_ in range(1, args.rounds + 1):
                for index, variant in enumerate(variants, 1):
                    strategy = STRATEGY_OF.get(variant, original.get("CACHE_STRATEGY", "two-tier"))
                    if strategy != current:
                        settings = {**base, "CACHE_STRATEGY": strategy}
                        say(
                            "configuring "
                            + " ".join(
                                f"{k}={v}" for k, v in settings.items() if k != "WRITE_API_TOKEN"
                            )
                        )
                        lab.apply_settings(stack, settings, apps)
                        current = strategy
                    say(
                        f"round {round_}/{args.rounds} [{index}/{len(variants)}] {variant}: "
                        f"{args.duration:g} s"
                    )
                    stack.flush_cache()
                    row = run_variant(stack, stack.base_url, args, variant, token, out)
                    runs[variant].append({**row, "strategy": strategy})
        finally:
            try:  # the lab's own settings (and its own WRITE_API_TOKEN, if any) come back
                lab.apply_settings(stack, original, apps)
            except Exception as exc:  # noqa: BLE001 - report, keep the first error
                say(f"could not restore the original settings: {exc}")
        where = machine.local_description()
    loads = [row["load"] for rounds in runs.values() for row in rounds]
    rows = {v: stalenessreport.combine_rounds(rounds) for v, rounds in runs.items() if rounds}
    meta = {
        **machine.run_meta(started, where, args.machine, loads),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "readers": args.readers,
        "writers": args.writers,
        "delay_s": args.delay,
        "ttl_s": args.ttl,
        "edge_seconds": args.edge_seconds,
        "payload_bytes": args.payload_bytes,
        "command": command_line(
            getattr(args, "argv", None), ["staleness"], ("--machine", "--results", "--project")
        ),
    }
    stalenessreport.write_report(out, meta, rows)
    if args.publish:
        stalenessreport.publish(out, args.publish)
    say(f"report: {out / 'staleness.md'}")
    return 0


def run_variant(
    stack: Stack | None,
    host: str,
    args: argparse.Namespace,
    variant: str,
    token: str,
    out: Path,
    meter: machine.LoadMeter | None = None,
) -> dict:
    before = stack.settled_slow_calls(source="item") if stack else None
    meter = meter or machine.LoadMeter(
        stack.docker if stack else None, stack.project if stack else None
    )
    meter.start()
    summary = run_locust_variant(host, args, variant, token, out)
    load = meter.stop()
    row = summary.get(variant, summarize(VariantStats()))
    if stack is not None and before is not None:
        calls = (
            stack.settled_slow_calls(at_least=before, source="item", timeout=args.delay + 60)
            - before
        )
        row["db_queries"] = calls
        row["db_queries_per_s"] = round(calls / args.duration, 2)
    else:
        row["db_queries"] = row["db_queries_per_s"] = None
    row["load"] = load.to_dict()
    say(f"  {variant}: { ({k: v for k, v in row.items() if k != 'load'}) }")
    return row


def run_locust_variant(
    host: str, args: argparse.Namespace, variant: str, token: str, out: Path
) -> dict:
    summary_path = out / f"staleness-{variant}.json"
    users = args.readers + args.writers
    command = headless_locust(host, users, users, args.duration) + [
        "--variant",
        variant,
        "--payload-bytes",
        str(args.payload_bytes),
        "--staleness-out",
        str(summary_path),
        "--writers",
        str(args.writers),
        "--wait-min",
        "0.02",
        "--wait-max",
        "0.1",
        "ItemWriter",
        "ItemReader",
    ]
    code, _output = run_locust(
        command,
        out,
        args.duration,
        variant,
        say,
        env=locust_environment(WRITE_API_TOKEN=token),
        log_name=f"locust-{variant}.log",
    )
    if not summary_path.exists():
        raise BenchError(
            f"{variant}: Locust wrote no staleness summary (exit {code}); "
            f"see {out / f'locust-{variant}.log'}"
        )
    return json.loads(summary_path.read_text())
