"""``python -m loadtest.bench sweep``: hit ratio per tier, DB load and p99 across key
skew, tier-1 size and payload size.

    python -m loadtest.bench sweep --publish docs/results           # the full sweep
    python -m loadtest.bench sweep --quick                          # the CI profile

Against the running lab (strategy ``two-tier``; its settings are put back at
the end), an open-loop k6 load (:mod:`loadtest.k6run`, from a container on
the host's network to the published Nginx port) reads the items API,
``/api/items/<id>`` over ``--keys`` items, with keys drawn uniformly or
Zipf-distributed (``--skews``: ``uniform`` or exponents, P(rank k) ~ 1/k^s).
Two sweeps share their cells:

* **tier-1 size**: every skew at every ``--tier1-sizes`` (``LOCAL_CACHE_SIZE``,
  the copies each worker keeps), payload ``--payloads``' first;
* **payload size**: every skew at every ``--payloads`` (``ITEM_PAYLOAD_BYTES``:
  db-init rewrites the items), tier 1 at the largest size.

Each cell: the lab reconfigured (only when its settings changed), Redis
flushed, every key read once (``--prime``: k6 reads the keys in turn for
``--keys``/``--rate`` s), ``--warmup`` of discarded load at ``--rate``, then
``--batches`` consecutive batches of ``--duration`` each, measured: the share of lookups each
tier answered (the app's
``cachelab_cache_requests_total`` by tier: memory, redis, database), the hit
ratio (cachelab.metrics' definition), PostgreSQL's slow item queries per
second (pg_stat_statements) and the p99 of the open loop. Each figure is the
mean of the batches with its 95 % t-interval: the **batch means** of one
steady run (the cache warm, the load unchanged), the usual interval for a
steady-state figure of one simulation run. It is not the spread between
independent runs (a fresh lab, another moment of the machine), which a
repeated command gives. The miss-ratio curve (``sweep.png``) is tier 1's hit
ratio against its size, one line per skew.

Why prime: a lab that has served this load for a while holds a copy of every
key read within its TTL plus ``CACHE_GRACE_SECONDS`` (300 s), fresh or stale,
so its only trips to the database that a reader waits for are the first reads
of keys (compulsory misses). A warm-up of random reads leaves some keys unread
for a long time -- 10 s at 200 req/s reaches about 86 % of 1,000 uniform keys,
far fewer of a Zipf tail -- and the batches then measured that warm-up ending:
the database's share fell 6 %, 1 %, 0 % across one cell's three batches.
Reading each key once first puts the cell in that steady state.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cachelab import metrics

from . import k6run, lab, machine, sweepreport
from .cliargs import command_line, optional_duration, parse_duration
from .errors import BenchError
from .numbers import ms
from .stack import ROOT, Stack
from .stats import means_with_spread

DESCRIPTION = (
    "Hit ratio per tier, DB queries/s and p99 across key skew, tier-1 size and payload "
    "size (open loop on the items API of the running lab)."
)
TIERS = ("memory", "redis", "database", "local", "none")
QUICK = {
    "skews": ["uniform", "1.2"],
    "tier1_sizes": [10, 1000],
    "payloads": [256, 16384],
    "rate": 80.0,
    "warmup": 2.0,
    "duration": 2.0,
    "batches": 2,
    "keys": 300,
}
# Every figure of a cell that gets its batch means and interval.
FIGURES = ("hit_ratio", "db_queries_per_s", "p99_ms", "p999_ms") + tuple(
    f"share_{tier}" for tier in TIERS
)


def say(message: str) -> None:
    print(f"bench sweep: {message}", flush=True)


def skew_list(text: str) -> list[str]:
    skews = [part.strip() for part in text.split(",") if part.strip()]
    for skew in skews:
        if skew != "uniform":
            try:
                if not 0 < float(skew) <= 5:
                    raise ValueError
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--skews: 'uniform' or a Zipf exponent in (0, 5], got {skew!r}"
                ) from None
    if not skews:
        raise argparse.ArgumentTypeError("--skews: at least one")
    return skews


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("each value must be at least 1")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skews",
        type=skew_list,
        default=["uniform", "0.7", "0.99", "1.2"],
        help="key distributions: uniform and Zipf exponents (default uniform,0.7,0.99,1.2)",
    )
    parser.add_argument(
        "--tier1-sizes",
        type=int_list,
        default=[10, 30, 100, 300, 1000],
        help="LOCAL_CACHE_SIZE values (default 10,30,100,300,1000)",
    )
    parser.add_argument(
        "--payloads",
        type=int_list,
        default=[256, 4096, 65536],
        help="ITEM_PAYLOAD_BYTES values (default 256,4096,65536)",
    )
    parser.add_argument("--keys", type=int, default=1000, help="items read: 1..N (default 1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop req/s (default 200)")
    parser.add_argument(
        "--warmup", type=optional_duration, default=10.0, help="discarded load per cell (10s)"
    )
    parser.add_argument(
        "--prime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read every key once before the warm-up, so no batch sees first reads (default on)",
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=10.0, help="measured load per batch (10s)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=3,
        help="measured batches per cell, back to back: the interval's batch means (default 3)",
    )
    parser.add_argument(
        "--delay", type=float, default=0.05, help="SLOW_QUERY_SECONDS (default 0.05)"
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="CACHE_TTL_SECONDS (default: --duration, so each batch is one expiry cycle)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI profile: uniform and 1.2, tier 1 10 and 1000, payloads 256 and 16384, "
        "300 keys, 80 req/s, each key read once, 2 s discarded + 2 batches of 2 s per cell "
        "(under 3 minutes)",
    )
    parser.add_argument("--project", default=None, help="Compose project of the lab")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--machine", default=None, help="machine description for the report")
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy sweep.md, sweep.json and sweep.png here (e.g. docs/results)",
    )


@dataclass(frozen=True)
class Cell:
    skew: str
    tier1: int
    payload: int
    sweeps: tuple[str, ...]  # which sweep(s) it belongs to


def cells(skews: list[str], sizes: list[int], payloads: list[int]) -> list[Cell]:
    """Both sweeps' cells, each once, grouped so the lab is reconfigured least."""
    found: dict[tuple[str, int, int], set[str]] = {}
    for skew, size in itertools.product(skews, sizes):
        found.setdefault((skew, size, payloads[0]), set()).add("tier1")
    for skew, payload in itertools.product(skews, payloads):
        found.setdefault((skew, max(sizes), payload), set()).add("payload")
    ordered = sorted(found, key=lambda c: (c[2], c[1], skews.index(c[0])))
    return [Cell(s, t, p, tuple(sorted(found[(s, t, p)]))) for s, t, p in ordered]


def lookups_by_tier(stack: Stack) -> dict[str, dict[str, float]]:
    """The app's lookups so far: {tier: {result: count}} (strategy two-tier)."""
    from .stack import metric

    samples = stack.app_metrics()
    return {
        tier: {
            result: metric(
                samples,
                "cachelab_cache_requests_total",
                strategy="two-tier",
                result=result,
                tier=tier,
            )
            for result in metrics.RESULTS
        }
        for tier in TIERS
    }


def measure_cell(stack: Stack, k6, url: str, cell: Cell, args: argparse.Namespace) -> dict:
    settings = dict(keys=args.keys, skew=cell.skew, lab_path="/api/items/{item}", first_item=1)
    prime = warm_cell(k6, url, settings, args)
    meter = machine.LoadMeter(stack.docker, stack.project)
    meter.start()
    batches = [
        measure_batch(stack, k6, url, {**settings, "seed": 2 + index}, args)
        for index in range(args.batches)
    ]
    load = meter.stop()
    return {
        "skew": cell.skew,
        "tier1": cell.tier1,
        "payload": cell.payload,
        "sweeps": list(cell.sweeps),
        **combine_batches(batches),
        "prime": prime,
        "load": load.to_dict(),
    }


def prime_seconds(keys: int, rate: float) -> int:
    """Seconds of k6 at ``rate`` that read each of ``keys`` keys at least once
    (k6 starts whole requests per second, one every 1/rate s)."""
    return math.ceil(keys / max(1, round(rate)))


def warm_cell(k6, url: str, settings: dict, args: argparse.Namespace) -> dict | None:
    """Bring a flushed cell to its steady state: every key read once (``--prime``),
    then ``--warmup`` of the cell's own load. Returns the priming step, whose
    errors or dropped requests mean some keys were left for the batches."""
    prime = None
    if args.prime:
        seconds = prime_seconds(args.keys, args.rate)
        # Every priming read is a first read that waits for the slow query (and
        # for a miss slot): VUs for a second of it, not the batches' 100 ms.
        vus = k6run.vus_for(args.rate, budget_ms=1000)
        step = k6.run(url, args.rate, seconds, **{**settings, "skew": "each", "vus": vus})
        prime = step.to_dict()
        if step.errors or step.dropped:
            say(
                f"priming: {step.errors} errors and {step.dropped} dropped requests, "
                "so some keys are first read in the batches"
            )
    # Each k6 run draws its keys from its own seed: with one seed (k6's default),
    # every batch replayed the warm-up's key sequence, so the keys it had just
    # filled came back as hits (uniform keys, tier 1 = 10: 100 % hits, 0 queries).
    if args.warmup > 0:
        k6.run(url, args.rate, args.warmup, seed=1, **settings)
    return prime


def measure_batch(stack: Stack, k6, url: str, settings: dict, args: argparse.Namespace) -> dict:
    """One batch: the tiers' lookups, PostgreSQL's slow item queries and k6's step."""
    before_calls = stack.settled_slow_calls(source="item", timeout=30)
    before = lookups_by_tier(stack)
    step = k6.run(url, args.rate, args.duration, **settings)
    after = lookups_by_tier(stack)
    calls = stack.settled_slow_calls(at_least=before_calls, source="item", timeout=30)
    delta = {
        tier: {r: max(0.0, after[tier][r] - before[tier][r]) for r in metrics.RESULTS}
        for tier in TIERS
    }
    by_result = {r: sum(delta[t][r] for t in TIERS) for r in metrics.RESULTS}
    total = sum(by_result.values())
    return {
        "lookups": total,
        "tier_share": {t: (sum(delta[t].values()) / total if total else None) for t in TIERS},
        "hit_ratio": metrics.hit_ratio(by_result),
        "db_queries": calls - before_calls,
        "db_queries_per_s": (calls - before_calls) / args.duration,
        "step": step.to_dict(),
    }


def combine_batches(batches: list[dict]) -> dict:
    """A cell's figures from its batches: lookups, queries, errors and dropped
    requests summed; every rate, share and percentile the mean of the batches,
    its 95 % interval under ``spread`` (two batches or more). Each batch stays
    under ``batches``."""
    if not batches:
        raise ValueError("a cell needs at least one batch")

    def figure(batch: dict, name: str) -> float | None:
        if name.startswith("share_"):
            return batch["tier_share"].get(name.removeprefix("share_"))
        return batch["step"].get(name) if name in ("p99_ms", "p999_ms") else batch.get(name)

    samples = {name: [figure(b, name) for b in batches] for name in FIGURES}
    means, spread = means_with_spread(samples)
    steps = [b["step"] for b in batches]
    return {
        "lookups": sum(b["lookups"] for b in batches),
        "tier_share": {t: means[f"share_{t}"] for t in TIERS},
        "hit_ratio": means["hit_ratio"],
        "db_queries": sum(b["db_queries"] for b in batches),
        "db_queries_per_s": means["db_queries_per_s"],
        "step": {
            "p99_ms": means["p99_ms"],
            "p999_ms": means["p999_ms"],
            "errors": sum(s.get("errors", 0) for s in steps),
            "dropped": sum(s.get("dropped", 0) for s in steps),
        },
        "spread": spread,
        "batches": batches,
    }


def steady_ttl(ttl: int | None, warmup: float, duration: float) -> int:
    """The TTL, checked so that the batches are of one steady run.

    Entries expire in waves, one TTL after the fills that made them: a batch that
    spans whole TTL cycles, after a warm-up of at least one, sees the same share
    of expiries as every other. Otherwise the batches differ by where the first
    wave falls (with a 30 s TTL, 10 s of warm-up and three 10 s batches, only the
    third saw it) and their interval measures that, not noise. The default TTL is
    the batch's length."""
    ttl = ttl if ttl is not None else int(duration)
    if ttl < 1 or duration != int(duration) or int(duration) % ttl or warmup < ttl:
        raise BenchError(
            f"--ttl {ttl} with --warmup {warmup:g}s and --duration {duration:g}s: each "
            "batch must span whole TTL cycles after a warm-up of at least one (--duration "
            "a whole multiple of --ttl, --warmup at least --ttl), or its batch means are "
            "not of one steady run"
        )
    return ttl


def run(args: argparse.Namespace, stack: Stack | None = None) -> int:
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if not 1 <= args.keys <= 100_000:
        raise BenchError("--keys must be between 1 and 100000 (ITEM_COUNT)")
    if args.batches < 1:
        raise BenchError("--batches must be at least 1")
    args.ttl = steady_ttl(args.ttl, args.warmup, args.duration)
    started = datetime.now(UTC)
    out = args.results or ROOT / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    stack = stack or lab.lab_stack(args.project)
    lab.check_stack_up(stack)
    original = lab.current_settings(stack)
    apps = lab.app_count(stack)
    k6 = k6run.DockerK6()
    grid = cells(args.skews, args.tier1_sizes, args.payloads)
    say(
        f"{len(grid)} cells at {args.rate:g} req/s, {args.batches} batches of "
        f"{args.duration:g} s each, "
        f"against {stack.base_url}"
    )
    rows = []
    current: tuple[int, int] | None = None
    try:
        for index, cell in enumerate(grid, 1):
            if current != (cell.tier1, cell.payload):
                lab.apply_settings(
                    stack,
                    {
                        "CACHE_STRATEGY": "two-tier",
                        "SLOW_QUERY_SECONDS": f"{args.delay:g}",
                        "CACHE_TTL_SECONDS": str(args.ttl),
                        "LOCAL_CACHE_SIZE": str(cell.tier1),
                        "ITEM_COUNT": str(max(args.keys, 1000)),
                        "ITEM_PAYLOAD_BYTES": str(cell.payload),
                    },
                    apps,
                )
                current = (cell.tier1, cell.payload)
            stack.flush_cache()
            row = measure_cell(stack, k6, stack.base_url, cell, args)
            rows.append(row)
            shares = row["tier_share"]
            say(
                f"[{index}/{len(grid)}] skew {cell.skew}, tier 1 {cell.tier1}, payload "
                f"{cell.payload} B: memory {_pct(shares['memory'])}, redis "
                f"{_pct(shares['redis'])}, database {_pct(shares['database'])}, "
                f"{row['db_queries_per_s']:.1f} DB queries/s, p99 {ms(row['step']['p99_ms'])} ms"
                + (" (machine disturbed)" if row["load"]["disturbed"] else "")
            )
    finally:
        say("restoring " + " ".join(f"{k}={v}" for k, v in sorted(original.items())))
        try:
            lab.apply_settings(stack, original, apps)
        except Exception as exc:  # noqa: BLE001 - report, keep the first error
            say(f"could not restore the original settings: {exc}")
    where = machine.local_description()
    loads = [row["load"] for row in rows]
    data = {
        "meta": {
            **machine.run_meta(started, where, args.machine, loads),
            "rate": args.rate,
            "warmup_s": args.warmup,
            "prime": args.prime,
            "duration_s": args.duration,
            "batches": args.batches,
            "keys": args.keys,
            "delay_s": args.delay,
            "ttl_s": args.ttl,
            "skews": args.skews,
            "tier1_sizes": args.tier1_sizes,
            "payloads": args.payloads,
            "quick": args.quick,
            "command": command_line(
                getattr(args, "argv", None), ["sweep"], ("--machine", "--results", "--project")
            ),
        },
        "cells": rows,
    }
    files = sweepreport.write_report(out, data)
    print(sweepreport.table(data, "tier1"), flush=True)
    say(f"report: {files['markdown']}")
    if args.publish:
        sweepreport.publish(out, args.publish)
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def load(results_dir: Path) -> dict:
    return json.loads((results_dir / "sweep.json").read_text())
