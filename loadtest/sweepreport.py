"""The report of ``python -m loadtest.bench sweep``: sweep.md, .json and the miss-ratio curve."""

from __future__ import annotations

from pathlib import Path

from . import charts, reportfiles
from .numbers import ms

CHART = "sweep.png"
TITLES = {
    "tier1": "Tier-1 size (LOCAL_CACHE_SIZE, copies per worker)",
    "payload": "Payload size (ITEM_PAYLOAD_BYTES)",
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


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
        lines.append(
            f"| {cell['skew']} | {cell['tier1']:,} | {cell['payload']:,} "
            f"| {_pct(shares.get('memory'))} | {_pct(shares.get('redis'))} "
            f"| {_pct(shares.get('database'))} | {_pct(cell['hit_ratio'])} "
            f"| {cell['db_queries_per_s']:.1f} | {ms(step['p99_ms'])} | {ms(step['p999_ms'])} "
            f"| {step['errors']} | {step['dropped']} "
            f"| {'disturbed' if cell['load'].get('disturbed') else 'quiet'} |"
        )
    return "\n".join(lines)


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
        f"{meta['warmup_s']:g} s discarded, then {meta['duration_s']:g} s measured"
        + (" (the quick CI profile)" if meta.get("quick") else ""),
        f"- **Lab**: two-tier, slow query {meta['delay_s']:g} s, TTL {meta['ttl_s']} s, Redis "
        "flushed before each cell",
        f"- **Command**: `{meta['command']}`",
        "",
        "*memory*, *Redis*, *database*: the share of the app's lookups each tier answered "
        "(`cachelab_cache_requests_total` by tier); *hit ratio*: the lab's one definition "
        "(cachelab.metrics); *DB queries/s*: PostgreSQL's own count of `slow_item()` "
        "(pg_stat_statements); p99 / p99.9: the open loop's, one run per cell (a single "
        "figure: no interval).",
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
