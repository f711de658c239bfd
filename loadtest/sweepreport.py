"""The report of ``python -m loadtest.bench sweep``: sweep.md, .json and the miss-ratio curve."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from . import charts, reportfiles
from .numbers import ms, plus_minus

CHART = "sweep.png"
TITLES = {
    "tier1": "Tier-1 size (LOCAL_CACHE_SIZE, copies per worker)",
    "payload": "Payload size (ITEM_PAYLOAD_BYTES)",
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _with_spread(cell: dict, name: str, value: float | None, fmt) -> str:
    """``value`` in ``fmt``, with ``± half-width`` when the cell's batches gave an
    interval (cut at 0 below: none of these figures can be negative)."""
    spread = cell.get("spread", {}).get(name)
    if value is None:
        return "n/a"
    if not spread:
        return fmt(value)
    half = (spread["high"] - spread["low"]) / 2
    return plus_minus(value, half, fmt)


def table(data: dict, sweep: str) -> str:
    lines = [
        "| skew | tier-1 size | payload B | memory | Redis | database | hit ratio "
        "| DB queries/s | p99 ms | p99.9 ms | errors | dropped | machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cell in data["cells"]:
        if sweep not in cell["sweeps"]:
            continue
        shares, step = cell["tier_share"], cell["step"]
        cell_text = partial(_with_spread, cell)
        lines.append(
            f"| {cell['skew']} | {cell['tier1']:,} | {cell['payload']:,} "
            f"| {cell_text('share_memory', shares.get('memory'), _pct)} "
            f"| {cell_text('share_redis', shares.get('redis'), _pct)} "
            f"| {cell_text('share_database', shares.get('database'), _pct)} "
            f"| {cell_text('hit_ratio', cell['hit_ratio'], _pct)} "
            f"| {cell_text('db_queries_per_s', cell['db_queries_per_s'], _rate1)} "
            f"| {cell_text('p99_ms', step['p99_ms'], ms)} "
            f"| {cell_text('p999_ms', step['p999_ms'], ms)} "
            f"| {step['errors']} | {step['dropped']} "
            f"| {'disturbed' if cell['load'].get('disturbed') else 'quiet'} |"
        )
    return "\n".join(lines)


def _rate1(value: float) -> str:
    return f"{value:.1f}"


def _spread_text(meta: dict) -> str:
    batches = meta.get("batches", 1)
    if batches < 2:
        return "one run per cell (a single figure: no interval)."
    return (
        f"each figure is the mean of the cell's {batches} consecutive batches of "
        f"{meta['duration_s']:g} s ± the half-width of its 95 % t-interval (batch means: the "
        "spread within one steady run, not between independent runs)."
    )


def _priming_text(cells: list[dict]) -> str:
    """Each key read once before the warm-up, and where a cell's priming lost some."""
    short = [c for c in cells if c.get("prime") and (c["prime"]["errors"] or c["prime"]["dropped"])]
    if not short:
        return "each key read once, "
    return (
        f"each key read once (in {len(short)} of {len(cells)} cells some priming requests "
        "failed or were dropped: their first batch saw those keys' first reads), "
    )


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    out = [
        "# Sweeps: key skew, tier-1 size and payload size",
        "",
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Load**: k6, open loop, {meta['rate']:g} req/s of `GET /api/items/<id>` over "
        f"items 1..{meta['keys']:,}, keys uniform or Zipf (P(rank k) ~ 1/k^s); per cell "
        + (_priming_text(data["cells"]) if meta.get("prime") else "")
        + f"{meta['warmup_s']:g} s discarded, then "
        f"{meta.get('batches', 1)} × {meta['duration_s']:g} s measured"
        + (" (the quick CI profile)" if meta.get("quick") else ""),
        f"- **Lab**: two-tier, slow query {meta['delay_s']:g} s, TTL {meta['ttl_s']} s, Redis "
        "flushed before each cell",
        f"- **Command**: `{meta['command']}`",
        "",
        "*memory*, *Redis*, *database*: the share of the app's lookups each tier answered "
        "(`cachelab_cache_requests_total` by tier); *hit ratio*: the lab's one definition "
        "(cachelab.metrics); *DB queries/s*: PostgreSQL's own count of `slow_item()` "
        "(pg_stat_statements); p99 / p99.9: the open loop's; " + _spread_text(meta),
        "",
    ]
    for sweep, title in TITLES.items():
        out += [f"## {title}", "", table(data, sweep), ""]
    out += [
        f"![tier 1's hit ratio against its size, per skew (miss-ratio curve)]({CHART})",
        "",
    ]
    return "\n".join(out)


def write_report(results_dir: Path, data: dict) -> dict[str, Path]:
    return reportfiles.write_report(
        results_dir, "sweep", data, render_markdown, charts.miss_ratio_chart
    )


def publish(results_dir: Path, target: Path) -> None:
    reportfiles.publish(results_dir, "sweep", target)
