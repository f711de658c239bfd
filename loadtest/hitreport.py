"""The report of ``python -m loadtest.bench hits``: hits.md, hits.json, hits.png.

Kept apart from the runner (:mod:`loadtest.hitbench`) so a report can be
re-rendered from its JSON without a stack: ``python -m loadtest.hitreport results/<run>``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .report import _clean  # JSON has no NaN: missing figures become null

MODE_TITLES = {
    "pure-hit": "Pure hits (TTL far above the run)",
    "expiry": "Across expiries (TTL = query time)",
}
CHART = "hits.png"


def _num(value, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _ms(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def mode_table(data: dict, mode: str) -> str:
    rows = data["modes"][mode]["rows"]
    labels = data["meta"]["labels"]
    lines = [
        "| system | req/s | p50 ms | p99 ms | CPU s / 1k req | Redis CPU s / 1k req "
        "| × Flask-Caching req/s | share of ceiling | CPU-throttled periods | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        throttled = row.get("throttled")
        lines.append(
            f"| {labels.get(name, name)} | {_num(row['rps'])} | {_ms(row['p50_ms'])} "
            f"| {_ms(row['p99_ms'])} | {_num(row['cpu_s_per_1k'], 3)} "
            f"| {_num(row['redis_cpu_s_per_1k'], 3)} "
            f"| {_num(row['x_flask_caching'], 2, '×')} "
            f"| {_num(None if row['of_ceiling'] is None else row['of_ceiling'] * 100, 1, ' %')} "
            f"| {_num(None if throttled is None else throttled * 100, 0, ' %')} "
            f"| {row['errors']} |"
        )
    return "\n".join(lines)


def render_tables(data: dict) -> str:
    out = []
    for mode in data["modes"]:
        out += [
            f"{MODE_TITLES[mode]}, TTL {data['modes'][mode]['ttl_s']} s:",
            "",
            mode_table(data, mode),
            "",
        ]
    for field, where in (("lag", ""), ("lag_cluster", " (cluster, SET on the key's primary)")):
        lag = data.get(field)
        if lag:
            out.append(
                f"Tier-1 invalidation lag{where} over {lag['writes']} writes: p50 "
                f"{lag['p50_ms']:.2f} ms, p99 {lag['p99_ms']:.2f} ms, max {lag['max_ms']:.2f} ms"
            )
    return "\n".join(out)


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    out = [
        "# Hit throughput: our strategies, Flask-Caching and a static page",
        "",
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Machine**: {meta['machine']}",
        f"- **Load**: wrk, closed loop, {meta['connections']} connections on "
        f"{meta['threads']} threads, `GET /api/version`, from a container on the stack's "
        f"network; {meta['rounds']} rounds of {meta['duration_s']:g} s per system and mode, "
        f"every system once per round in a shuffled order, after {meta['warmup_s']:g} s of "
        f"discarded load; the tables give the **median of the rounds**",
        f"- **Stack**: one {meta['engine']} and one PostgreSQL shared by all; each system "
        f"under test limited to 1 CPU (`cpus: 1.0`); slow query {meta['delay_s']:g} s"
        + (
            "; the `@cluster` systems use the lab's Valkey Cluster instead (three "
            "primaries and three replicas, 0.5 CPU each; their cache CPU is the nodes' sum)"
            if meta.get("topology", "single") != "single"
            else ""
        ),
        f"- **Command**: `{meta['command']}`",
        "",
    ]
    for mode in data["modes"]:
        out += [
            f"## {MODE_TITLES[mode]}: TTL {data['modes'][mode]['ttl_s']} s",
            "",
            mode_table(data, mode),
            "",
        ]
    lag = data.get("lag")
    if lag:
        out += [
            "## Tier-1 invalidation lag",
            "",
            f"A SET made outside the app (on Redis' published port) against an entry "
            f"every connection was served from memory, then GETs at the two-tier app's "
            f"port over {lag['connections']} keep-alive connections until no answer has "
            f"the old value, {lag['writes']} times: **p50 {lag['p50_ms']:.2f} ms, "
            f"p99 {lag['p99_ms']:.2f} ms** (max {lag['max_ms']:.2f} ms). The lag is "
            f"measured from the SET's reply to the start of the last request that "
            f"still got the old value (0: none did)"
            + (
                f"; {lag['stale_writes']} of the {lag['writes']} writes had such a "
                f"request, and one poll took {lag['poll_p50_ms']:.2f} ms (p50), the "
                f"resolution of the measurement"
                if "stale_writes" in lag
                else ""
            )
            + ".",
            "",
        ]
    lag = data.get("lag_cluster")
    if lag:
        out += [
            "On the cluster (the SET on the primary that owns the key, GETs at the "
            f"`two-tier@cluster` port): **p50 {lag['p50_ms']:.2f} ms, p99 "
            f"{lag['p99_ms']:.2f} ms** (max {lag['max_ms']:.2f} ms), "
            f"{lag['stale_writes']} of {lag['writes']} writes with a stale answer.",
            "",
        ]
    cpu = meta["cpu_services"]
    out += [
        "How to read it:",
        "",
        "- *req/s*, *p50*, *p99*: wrk's figures (latency of completed requests; wrk's "
        "request timeout is long enough that a request waiting for the slow query "
        "counts).",
        "- *CPU s / 1k req*: CPU seconds the system's containers used during its round "
        "(Docker's `cpu_stats.cpu_usage.total_usage`, before/after) per 1,000 requests"
        + "".join(
            f"; {name}: {' + '.join(services)}"
            for name, services in cpu.items()
            if len(services) > 1
        )
        + ". *Redis CPU* is the shared cache's, apart.",
        "- *× Flask-Caching*: req/s divided by Flask-Caching's in the same mode; "
        "*share of ceiling*: req/s as a share of the static page's.",
        "- *CPU-throttled periods*: the share of the kernel's 100 ms CFS periods in "
        "which the system's container (the busier of two) used up its 1-CPU quota and "
        "was stopped until the next period (Docker's `throttling_data`). A saturated "
        "container with two busy processes (two gunicorn workers) spends its quota in "
        "about 50 ms on two cores, then waits: requests in flight then take tens of ms "
        "more, which is what the p99 of such a system shows.",
        "- Expiry mode: a key that expired while its system was idle (between its "
        "rounds) is refilled by the first request of the next round; cache-aside and "
        "Flask-Caching make the requests that arrive meanwhile wait for the query, "
        "swr and two-tier serve the stale entry while one refresh runs.",
        "",
        f"![req/s, p99 and CPU per request per system]({CHART})",
        "",
    ]
    return "\n".join(out)


def write_chart(path: Path, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(data["modes"])
    systems = data["meta"]["systems"]
    panels = (
        ("rps", "requests/s, median (log)", True),
        ("p99_ms", "p99, ms (log)", True),
        ("cpu_s_per_1k", "CPU s per 1,000 requests", False),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.8))
    width = 0.8 / max(len(modes), 1)
    for ax, (key, title, log) in zip(axes, panels, strict=True):
        for i, mode in enumerate(modes):
            rows = data["modes"][mode]["rows"]
            values = [rows[name][key] for name in systems]
            xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(systems))]
            bars = ax.bar(
                xs,
                [max(v, 1e-3) if v is not None else 0 for v in values],
                width,
                label=MODE_TITLES[mode],
            )
            fmt = (
                _ms
                if key == "p99_ms"
                else (lambda v: _num(v, 3))
                if key == "cpu_s_per_1k"
                else _num
            )
            ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=6, padding=1, rotation=90)
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.margins(y=0.25)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Hit throughput at 1 CPU per system, wrk {data['meta']['connections']} "
        f"connections, median of {data['meta']['rounds']} interleaved rounds",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results_dir: Path, data: dict) -> dict[str, Path]:
    files = {
        "json": results_dir / "hits.json",
        "markdown": results_dir / "hits.md",
        "chart": results_dir / CHART,
    }
    files["json"].write_text(json.dumps(_clean(data), indent=2, allow_nan=False, default=str))
    files["markdown"].write_text(render_markdown(data))
    write_chart(files["chart"], data)
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m loadtest.hitreport results/<run>")
    folder = Path(sys.argv[1])
    for name, path in write_report(folder, json.loads((folder / "hits.json").read_text())).items():
        print(f"{name}: {path}")
