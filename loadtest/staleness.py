"""Staleness measured from outside the app: what each invalidation mode costs.

Writers ``PUT /api/items/<id>?mode=M`` and record every committed version with
the moment its answer arrived (an upper bound of the commit time). Readers
``GET`` the same items and compare: a read is **stale** when it started after
a newer version had been confirmed to a writer, and its **staleness** is the
time since the first such version was confirmed. A writer also reads its own
item right after each write: an older version there is a **read-your-writes
violation**. Nothing here trusts the app's own account.

    python -m loadtest.bench staleness --duration 30s --delay 1 --ttl 10

runs the Locust writer and reader scenarios (loadtest/locustfile.py,
``ItemWriter`` and ``ItemReader``) once per mode -- one mode at a time, so the
slow queries PostgreSQL counts (pg_stat_statements) belong to that mode -- and
writes ``results/<UTC time>/staleness.md``, ``.json`` and a chart
(``--publish docs/results`` copies them). The lab must be running, with a
``WRITE_API_TOKEN`` (the command sets one for its runs and puts the lab back).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Variants run by default: each mode as shipped, and the unguarded delete and
# write-through that show the race each guard fixes.
VARIANTS = (
    "ttl",
    "delete",
    "delete-unguarded",
    "write-through",
    "write-through-unguarded",
    "notify",
)
ITEMS_PER_VARIANT = 20


def variant_query(variant: str) -> str:
    """``delete-unguarded`` -> ``mode=delete&guard=off``."""
    if variant.endswith("-unguarded"):
        return f"mode={variant.removesuffix('-unguarded')}&guard=off"
    return f"mode={variant}"


def variant_items(variant: str) -> range:
    """Each variant writes and reads its own items, so runs never interfere."""
    index = VARIANTS.index(variant) if variant in VARIANTS else 0
    first = 1 + index * ITEMS_PER_VARIANT
    return range(first, first + ITEMS_PER_VARIANT)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class VariantStats:
    reads: int = 0
    stale_reads: int = 0
    staleness_s: list[float] = field(default_factory=list)
    writes: int = 0
    write_latency_s: list[float] = field(default_factory=list)
    own_reads: int = 0
    ryw_violations: int = 0
    errors: int = 0


class Ledger:
    """Committed versions per (variant, item), as writers saw them confirmed."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._commits: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
        self.stats: dict[str, VariantStats] = defaultdict(VariantStats)

    def committed(
        self,
        variant: str,
        item: int,
        version: int,
        confirmed_at: float,
        latency: float | None = None,
    ) -> None:
        with self._lock:
            self._commits[(variant, item)].append((version, confirmed_at))
            if latency is not None:
                stats = self.stats[variant]
                stats.writes += 1
                stats.write_latency_s.append(latency)

    def staleness(self, variant: str, item: int, version: int, started: float) -> float | None:
        """Seconds since a newer version than ``version`` was confirmed, if one
        was confirmed before the read started; None for a fresh read."""
        with self._lock:
            newer = [
                at
                for v, at in self._commits.get((variant, item), ())
                if v > version and at <= started
            ]
        return started - min(newer) if newer else None

    def read(self, variant: str, item: int, version: int, started: float) -> float | None:
        age = self.staleness(variant, item, version, started)
        with self._lock:
            stats = self.stats[variant]
            stats.reads += 1
            if age is not None:
                stats.stale_reads += 1
                stats.staleness_s.append(age)
        return age

    def own_read(self, variant: str, written: int, read: int) -> bool:
        """A writer's read of its own item right after its write."""
        violated = read < written
        with self._lock:
            stats = self.stats[variant]
            stats.own_reads += 1
            stats.ryw_violations += violated
        return not violated

    def error(self, variant: str) -> None:
        with self._lock:
            self.stats[variant].errors += 1

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {variant: summarize(stats) for variant, stats in self.stats.items()}


def summarize(stats: VariantStats) -> dict:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "reads": stats.reads,
        "stale_reads": stats.stale_reads,
        "stale_ratio": round(stats.stale_reads / stats.reads, 4) if stats.reads else None,
        "staleness_p50_ms": ms(percentile(stats.staleness_s, 50)),
        "staleness_p99_ms": ms(percentile(stats.staleness_s, 99)),
        "staleness_max_ms": ms(max(stats.staleness_s, default=None)),
        "writes": stats.writes,
        "own_reads": stats.own_reads,
        "ryw_violations": stats.ryw_violations,
        "errors": stats.errors,
        "write_p50_ms": ms(percentile(stats.write_latency_s, 50)),
        "write_p99_ms": ms(percentile(stats.write_latency_s, 99)),
    }


# -- the command -----------------------------------------------------------------------
def say(message: str) -> None:
    print(f"staleness: {message}", flush=True)


DESCRIPTION = (
    "Run the Locust writer and reader scenarios against each invalidation mode "
    "of the running lab and report staleness, read-your-writes violations, "
    "database queries/s and write latency per mode."
)


def add_arguments(parser: argparse.ArgumentParser, parse_duration) -> None:
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
    parser.add_argument("--readers", type=int, default=8, help="reader users (default 8)")
    parser.add_argument("--writers", type=int, default=2, help="writer users (default 2)")
    parser.add_argument(
        "--delay", type=float, default=1.0, help="SLOW_QUERY_SECONDS for the runs (default 1)"
    )
    parser.add_argument("--ttl", type=int, default=10, help="CACHE_TTL_SECONDS (default 10)")
    parser.add_argument(
        "--payload-bytes", type=int, default=256, help="size of each written payload (default 256)"
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy staleness.md and the chart here (e.g. docs/results)",
    )
    parser.add_argument("--project", default=None, help="Compose project of the lab")


def run(args: argparse.Namespace, stack=None) -> int:
    from .bench import BenchError, apply_settings, check_stack_up, current_settings
    from .stack import ROOT, Stack

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise BenchError(
            f"unknown variant {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}"
        )
    stack = stack or (
        Stack.running_lab()
        if args.project in (None, "cachelab")
        else Stack(project=args.project, files=[ROOT / "compose.yaml"], env={})
    )
    check_stack_up(stack)
    started = datetime.now(UTC)
    out = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    original = current_settings(stack)
    token = os.environ.get("WRITE_API_TOKEN") or os.urandom(16).hex()
    app_count = max(1, len([c for c in stack.containers("app") if c.status == "running"]))
    settings = {
        "SLOW_QUERY_SECONDS": f"{args.delay:g}",
        "CACHE_TTL_SECONDS": str(args.ttl),
        "WRITE_API_TOKEN": token,
    }
    rows: dict[str, dict] = {}
    try:
        say(
            "configuring "
            + " ".join(f"{k}={v}" for k, v in settings.items() if k != "WRITE_API_TOKEN")
        )
        apply_settings(stack, settings, app_count)
        for index, variant in enumerate(variants, 1):
            say(f"[{index}/{len(variants)}] {variant}: {args.duration:g} s")
            stack.flush_cache()
            before = stack.settled_slow_calls(source="item")
            summary = run_locust(stack, args, variant, token, out)
            calls = (
                stack.settled_slow_calls(at_least=before, source="item", timeout=args.delay + 60)
                - before
            )
            row = summary.get(variant, summarize(VariantStats()))
            row["db_queries"] = calls
            row["db_queries_per_s"] = round(calls / args.duration, 2)
            rows[variant] = row
            say(f"  {variant}: {row}")
    finally:
        try:  # the lab's own settings (and its own WRITE_API_TOKEN, if any) come back
            apply_settings(stack, original, app_count)
        except Exception as exc:  # noqa: BLE001 - report, keep the first error
            say(f"could not restore the original settings: {exc}")
    write_report(out, rows, args)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ("staleness.md", "staleness.png"):
            shutil.copy2(out / name, args.publish / name)
    say(f"report: {out / 'staleness.md'}")
    return 0


def run_locust(stack, args: argparse.Namespace, variant: str, token: str, out: Path) -> dict:
    from .bench import headless_locust, locust_environment

    summary_path = out / f"staleness-{variant}.json"
    users = args.readers + args.writers
    command = headless_locust(stack.base_url, users, users, args.duration) + [
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
    env = locust_environment(WRITE_API_TOKEN=token)
    log = out / f"locust-{variant}.log"
    with log.open("w") as handle:
        result = subprocess.run(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=out,
            timeout=args.duration + 90,
        )
    if not summary_path.exists():
        raise RuntimeError(
            f"{variant}: Locust wrote no staleness summary (exit {result.returncode}); see {log}"
        )
    return json.loads(summary_path.read_text())


COLUMNS = (
    ("reads", "reads"),
    ("stale_ratio", "stale reads"),
    ("staleness_p50_ms", "staleness p50 ms"),
    ("staleness_p99_ms", "p99 ms"),
    ("staleness_max_ms", "max ms"),
    ("ryw_violations", "RYW violations"),
    ("db_queries_per_s", "DB queries/s"),
    ("write_p50_ms", "write p50 ms"),
    ("write_p99_ms", "write p99 ms"),
)


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "stale_ratio":
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def table(rows: dict[str, dict]) -> str:
    head = "| variant | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for variant, row in rows.items():
        lines.append(
            f"| `{variant}` | " + " | ".join(_cell(key, row.get(key)) for key, _ in COLUMNS) + " |"
        )
    return "\n".join(lines)


def write_report(out: Path, rows: dict[str, dict], args: argparse.Namespace) -> None:
    (out / "staleness.json").write_text(
        json.dumps(
            {"settings": {k: str(v) for k, v in vars(args).items()}, "variants": rows},
            indent=2,
            default=str,
        )
    )
    text = [
        "# Staleness per invalidation mode",
        "",
        f"Each variant ran {args.duration:g} s alone: {args.writers} writers, "
        f"{args.readers} readers on {ITEMS_PER_VARIANT} items of its own; slow query "
        f"{args.delay:g} s, TTL {args.ttl} s, payload {args.payload_bytes} bytes. "
        "A read is stale when it started after a newer version had been confirmed to a "
        "writer; staleness is the time since then. DB queries are PostgreSQL's own count "
        "(pg_stat_statements) of `slow_item()`.",
        "",
        table(rows),
        "",
        "![staleness per mode](staleness.png)",
        "",
        f"`python -m loadtest.bench staleness --duration {args.duration:g}s --delay {args.delay:g} "
        f"--ttl {args.ttl}`",
    ]
    (out / "staleness.md").write_text("\n".join(text) + "\n")
    chart(out / "staleness.png", rows)


def chart(path: Path, rows: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        ("stale_ratio", "stale reads (%)", 100),
        ("staleness_p99_ms", "staleness p99 (ms)", 1),
        ("db_queries_per_s", "database queries/s", 1),
    ]
    for axis, (key, title, scale) in zip(axes, panels, strict=True):
        values = [(rows[name].get(key) or 0) * scale for name in names]
        axis.bar(range(len(names)), values, color="#4c72b0")
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(title)
        for x, value in enumerate(values):
            axis.annotate(f"{value:,.1f}", (x, value), ha="center", va="bottom", fontsize=7)
    fig.suptitle("What each invalidation mode costs in staleness and database load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.staleness`` is ``python -m loadtest.bench staleness``."""
    from .bench import main as bench_main

    return bench_main(["staleness", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Ledger", "VariantStats", "asdict", "summarize", "variant_items", "variant_query"]
