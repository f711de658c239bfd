"""README.md's figures, generated from docs/results (and checked against it).

    python -m loadtest.readme            # rewrite README.md's generated blocks
    python -m loadtest.readme --check    # exit 1 when README.md disagrees with docs/results

Every table of figures in README.md's Results section sits between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` and is rendered here
from the JSON the benchmarks published (``--publish docs/results``), with the
command that produced it and how busy the machine was.
tests/unit/test_readme_results.py fails when README.md and docs/results
disagree, or when a figure appears in the Results section outside a block.
docs/results/goals.md (issue 20's goals, each measured figure and whether it
was met) is rendered here too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .numbers import interval_text, ms, plus_minus, rate, ratio_text, with_range
from .stack import ROOT

README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"
BLOCK = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def _json(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _ratio(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    text = f"**{ratio_text(cell['mean'])}**"
    if cell.get("low") is not None and cell["low"] != cell["high"]:
        text += f" ({ratio_text(cell['low'])}–{ratio_text(cell['high'])})"
    return text


def _footer(meta: dict) -> str:
    return (
        f"Measured {meta['started_utc']} UTC on {meta['machine']}; machine load: "
        f"{meta.get('load_note', 'not recorded')}.\n`{meta['command']}`\n"
    )


def latency_block(folder: Path) -> str:
    data = _json(folder, "summary.json")
    if not data:
        return "(no latency results yet)\n"
    lines = [
        "| strategy | req/s | p50 | p99 | slow queries | DB queries/s | hit ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in data["runs"]:
        qps = run["slow_calls"] / run["duration_s"] if run.get("slow_calls") is not None else None
        spread = run.get("spread") or {}

        def cell(key: str, value: float | None, fmt: Callable[[float], str]) -> str:
            found = spread.get(key)  # noqa: B023 - used at once, in this iteration
            return plus_minus(value, (found["high"] - found["low"]) / 2 if found else None, fmt)

        lines.append(
            f"| `{run['strategy']}` | {cell('rps', run['rps'], rate)} "
            f"| {cell('p50_ms', run['p50_ms'], _latency)} "
            f"| {cell('p99_ms', run['p99_ms'], _latency)} | {run.get('slow_calls', 'n/a')} "
            f"| {cell('queries_per_second', qps, lambda v: f'{v:.2f}')} "
            f"| {_share(run.get('hit_ratio'), spread.get('hit_ratio'))} |"
        )
    rounds = data["meta"].get("rounds", 1)
    note = (
        f"Means of {rounds} rounds ± the half-width of their 95 % interval (the hit ratio's "
        "interval in parentheses, where the rounds differ); slow queries summed over the "
        "rounds.\n"
        if rounds > 1
        else ""
    )
    return "\n".join(lines) + "\n\n" + note + _footer(data["meta"])


def _share(value: float | None, found: dict | None) -> str:
    """A ratio, with its interval cut to 0–100 %."""
    if value is None:
        return "n/a"
    return with_range(value, found, lambda v: f"{v:.1%}", top=1.0)


def _latency(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{ms(value)} ms"


def capacity_block(folder: Path) -> str:
    data = _json(folder, "capacity.json")
    if not data:
        return "(no capacity results yet)\n"
    target = data["p99_target_ms"]
    lines = [
        f"| system | highest rate with p99 ≤ {target:g} ms | p99 there | p99 at half that rate "
        "| × Flask-Caching | closed loop (wrk) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system in data["systems"].values():
        summary = system["summary"]
        knee = summary.get("knee_rps")
        knee_text = "none met" if knee is None else f"{rate(knee)} req/s"
        if knee is not None and summary.get("first_miss_rps"):
            knee_text += f" (< {rate(summary['first_miss_rps'])})"
        lines.append(
            f"| {system['label']} | {knee_text} "
            f"| {interval_text(summary.get('knee_p99_ms'), ms, 'ms')} "
            f"| {interval_text(summary.get('half_knee_p99_ms'), ms, 'ms')} "
            f"| {_ratio(summary.get('x_flask_caching'))} | {rate(system.get('closed_rps'))} req/s |"
        )
    ceiling = data.get("cache_ceiling")
    if ceiling and ceiling.get("rps"):
        lines.append(
            "| the cache server itself (valkey-benchmark GET, **closed loop**) | n/a "
            f"| {interval_text(ceiling.get('p99_ms'), ms, 'ms')} | n/a | n/a "
            f"| {interval_text(ceiling['rps'], rate, 'req/s')} |"
        )
    return "\n".join(lines) + "\n\n" + _footer(data["meta"])


def hits_block(folder: Path) -> str:
    data = _json(folder, "hits.json")
    if not data:
        return "(no hit-throughput results yet)\n"
    modes = list(data["modes"])
    head = "| system |" + "".join(f" {mode} req/s | × Flask-Caching | p99 |" for mode in modes)
    lines = [head, "|---|" + "---:|---:|---:|" * len(modes)]
    labels = data["meta"]["labels"]
    for name in data["meta"]["systems"]:
        cells = []
        for mode in modes:
            row = data["modes"][mode]["rows"][name]
            cells.append(
                f" {interval_text(row['rps'])} | {_ratio(row.get('x_flask_caching'))} "
                f"| {interval_text(row['p99_ms'], ms, 'ms')} |"
            )
        lines.append(f"| {labels.get(name, name)} |" + "".join(cells))
    text = "\n".join(lines) + "\n"
    lag = data.get("lag")
    if lag:
        text += (
            f"\nTier 1's invalidation lag over {lag['writes']} writes made outside the app: "
            f"p99 {lag['p99_ms']:.2f} ms ({lag['stale_writes']} writes with a stale answer; "
            f"one poll, {lag['poll_p50_ms']:.1f} ms, is the resolution).\n"
        )
    return text + "\n" + _footer(data["meta"])


def staleness_block(folder: Path) -> str:
    data = _json(folder, "staleness.json")
    if not data:
        return "(no staleness results yet)\n"
    lines = [
        "| variant | stale reads | staleness p99 | read-your-writes violations "
        "| DB queries/s | write p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, row in data["variants"].items():
        stale = row.get("stale_ratio")
        p99 = row.get("staleness_p99_ms")
        lines.append(
            f"| `{variant}` | {'none' if not stale else f'{stale:.2%}'} "
            f"| {'none' if not row.get('stale_reads') else _latency(p99)} "
            f"| {row['ryw_violations']} of {row['own_reads']} "
            f"| {'n/a' if row.get('db_queries_per_s') is None else row['db_queries_per_s']} "
            f"| {_latency(row.get('write_p50_ms'))} |"
        )
    return "\n".join(lines) + "\n\n" + _footer(data["meta"])


def sweep_block(folder: Path) -> str:
    data = _json(folder, "sweep.json")
    if not data:
        return "(no sweep results yet)\n"
    cells = [c for c in data["cells"] if "tier1" in c["sweeps"]]
    sizes = sorted({c["tier1"] for c in cells})
    skews = list(dict.fromkeys(c["skew"] for c in cells))
    lines = [
        "| key skew | " + " | ".join(f"tier 1 = {s:,}" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for skew in skews:
        row = {c["tier1"]: c for c in cells if c["skew"] == skew}
        lines.append(
            f"| {'uniform' if skew == 'uniform' else f'Zipf {skew}'} | "
            + " | ".join(
                "n/a"
                if s not in row or row[s]["tier_share"].get("memory") is None
                else f"{row[s]['tier_share']['memory']:.0%} / {row[s]['db_queries_per_s']:.1f}"
                for s in sizes
            )
            + " |"
        )
    meta = data["meta"]
    batches = meta.get("batches", 1)
    spread = (
        f" (means of {batches} batches of {meta['duration_s']:g} s; their 95 % intervals are "
        "in [sweep.md](docs/results/sweep.md))"
        if batches >= 2
        else ""
    )
    return (
        f"Tier 1's share of the lookups / DB queries per second, {meta['keys']:,} items, "
        f"{meta['rate']:g} req/s open loop{spread}:\n\n" + "\n".join(lines) + "\n\n" + _footer(meta)
    )


def before_after_block(folder: Path) -> str:
    """Issue 20's item 5: the lab as it was before its tuning beside today's, each
    benchmark in one run (``--before REF``), published to ``before-after/``."""
    found = folder / "before-after"
    parts = [
        render_block(found)
        for render_block, name in ((capacity_block, "capacity.json"), (hits_block, "hits.json"))
        if (found / name).exists()
    ]
    return "\n".join(parts) if parts else "(no before/after results yet)\n"


BLOCKS: dict[str, Callable[[Path], str]] = {
    "latency": latency_block,
    "capacity": capacity_block,
    "hits": hits_block,
    "staleness": staleness_block,
    "sweep": sweep_block,
    "before_after": before_after_block,
}


def render(readme: str, folder: Path = RESULTS) -> str:
    """README's text with every generated block rendered from ``folder``."""

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"README.md has an unknown results block {name!r}")
        return match.group(1) + BLOCKS[name](folder) + match.group(4)

    return BLOCK.sub(replace, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.readme", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    from . import goals

    current = README.read_text()
    wanted = render(current)
    goals_text = goals.render(RESULTS)
    goals_path = RESULTS / "goals.md"
    stale = wanted != current or (not goals_path.exists() or goals_path.read_text() != goals_text)
    if args.check:
        if stale:
            print(
                "README.md or docs/results/goals.md disagrees with docs/results: run "
                "`python -m loadtest.readme`",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(wanted)
    goals_path.write_text(goals_text)
    print(f"wrote {README} and {goals_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
