"""The report of ``python -m loadtest.bench hits``: hits.md, hits.json, hits.png.

Kept apart from the runner (:mod:`loadtest.hitbench`) so a report can be
re-rendered from its JSON without a stack: ``python -m loadtest.hitreport results/<run>``.
"""

from __future__ import annotations

import json
import statistics
import sys
from functools import partial
from pathlib import Path

from . import charts, reportfiles
from .numbers import interval_text, ms, ratio_text
from .stats import interval, ratios_interval

MODE_TITLES = {
    "pure-hit": "Pure hits (TTL far above the run)",
    "expiry": "Across expiries (TTL = query time)",
    "as-deployed": "The target as deployed (its own TTL and traffic)",
}
CHART = "hits.png"


def summarize(samples: list, base: list, ceiling: list) -> dict:
    """A system's row from its samples (:class:`loadtest.hitbench.Sample`, one
    per round): each figure's mean and 95 % interval over the rounds; its ratios
    to Flask-Caching's and the ceiling's rates from the same rounds."""

    def spread(values, of=interval) -> dict | None:
        found = of(list(values))
        return None if found is None else found.to_dict()

    def paired(others: list) -> dict | None:
        by_round = {s.round: s.rps for s in others if s.rps}
        return spread(
            (s.rps / by_round[s.round] for s in samples if s.round in by_round), ratios_interval
        )

    def paired_cpu(others: list) -> dict | None:
        by_round = {s.round: s.cpu_s_per_1k for s in others if s.cpu_s_per_1k}
        return spread(
            (s.cpu_s_per_1k / by_round[s.round] for s in samples if s.round in by_round),
            ratios_interval,
        )

    throttled = [s.throttled for s in samples if s.throttled is not None]
    return {
        "rounds": len(samples),
        "requests": sum(s.requests for s in samples),
        "errors": sum(s.errors for s in samples),
        "rps": spread(s.rps for s in samples),
        "p50_ms": spread(s.p50_ms for s in samples),
        "p99_ms": spread(s.p99_ms for s in samples),
        "max_ms": max(s.max_ms for s in samples),
        "cpu_s_per_1k": spread(s.cpu_s_per_1k for s in samples),
        "redis_cpu_s_per_1k": spread(s.redis_cpu_s_per_1k for s in samples),
        "throttled": statistics.median(throttled) if throttled else None,
        "x_flask_caching": paired(base) if base else None,
        "of_ceiling": paired(ceiling) if ceiling else None,
        "cpu_x_flask_caching": paired_cpu(base) if base else None,
        "disturbed_rounds": sum(1 for s in samples if s.load.get("disturbed")),
    }


def _mean(cell: dict | None) -> float | None:
    return None if not cell else cell["mean"]


def _ratio(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    text = ratio_text(cell["mean"])
    if cell.get("n", 1) > 1:
        text += f" ({ratio_text(cell['low'])}–{ratio_text(cell['high'])})"
    return text


def _share(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    return f"{cell['mean'] * 100:.1f} %"


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def mode_table(data: dict, mode: str) -> str:
    rows = data["modes"][mode]["rows"]
    labels = data["meta"]["labels"]
    lines = [
        "| system | req/s | p50 ms | p99 ms | CPU s / 1k req | Redis CPU s / 1k req "
        "| × Flask-Caching req/s (95 % CI) | share of ceiling | CPU-throttled periods | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        throttled = row.get("throttled")
        lines.append(
            f"| {labels.get(name, name)} | {interval_text(row['rps'])} "
            f"| {interval_text(row['p50_ms'], ms)} "
            f"| {interval_text(row['p99_ms'], ms)} | {_cpu(_mean(row['cpu_s_per_1k']))} "
            f"| {_cpu(_mean(row['redis_cpu_s_per_1k']))} "
            f"| {_ratio(row['x_flask_caching'])} "
            f"| {_share(row['of_ceiling'])} "
            f"| {'n/a' if throttled is None else f'{throttled * 100:.0f} %'} "
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
        "# Hit throughput at saturation (closed loop): our strategies, Flask-Caching, "
        "a static page",
        "",
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Load**: wrk, **closed loop**, {meta['connections']} connections on "
        f"{meta['threads']} threads, `GET /api/version`, from a container on the stack's "
        f"network; {meta['rounds']} rounds of {meta['duration_s']:g} s per system and mode, "
        f"every system once per round in a shuffled order, after {meta['warmup_s']:g} s of "
        f"discarded load; each figure is the **mean of the rounds ± the half-width of its "
        f"95 % confidence interval** (Student t); ratios are geometric means with their "
        "interval taken on the logarithms (so never below 0)",
        f"- **Stack**: one {meta['engine']} and one PostgreSQL shared by all; every app and "
        f"Nginx with the lab's CPU limit (compose.yaml), Flask-Caching behind the same Nginx "
        f"image and configuration; slow query {meta['delay_s']:g} s"
        + (f"; `before` is the lab at `{meta['before']}`" if meta.get("before") else "")
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
            f"still got the old value (0: none did); {lag['stale_writes']} of the "
            f"{lag['writes']} writes had such a request, and one poll took "
            f"{lag['poll_p50_ms']:.2f} ms (p50), the resolution of the measurement.",
            "",
        ]
    lag = data.get("lag_cluster")
    if lag:
        out += [] if data.get("lag") else ["## Tier-1 invalidation lag", ""]
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
        "- *req/s*, *p50*, *p99*: wrk's figures, a **closed loop** (each connection "
        "waits for its answer before sending again: the rate at saturation; its "
        "latencies hide the requests a stall delayed -- the open-loop figures are in "
        "[capacity.md](capacity.md)).",
        "- *CPU s / 1k req*: CPU seconds the system's containers used during its round "
        "(their cgroups' counters) per 1,000 requests"
        + "".join(
            f"; {name}: {' + '.join(services)}"
            for name, services in cpu.items()
            if len(services) > 1
        )
        + ". *Redis CPU* is the shared cache's, apart.",
        "- *× Flask-Caching*: the system's req/s over Flask-Caching's (through the same "
        "Nginx) in the same round, the geometric mean over the rounds; *share of ceiling*: "
        "the same "
        "against the static page.",
        "- *CPU-throttled periods*: the share of CFS periods in which the system's "
        "container (the busier of two) used up its CPU quota and was stopped until the "
        "next period.",
        "- Expiry mode: a key that expired while its system was idle (between its "
        "rounds) is refilled by the first request of the next round; cache-aside and "
        "Flask-Caching make the requests that arrive meanwhile wait for the query, "
        "swr, two-tier and edge serve the stale entry while one refresh runs.",
        "",
        f"![req/s, p99 and CPU per request per system]({CHART})",
        "",
    ]
    return "\n".join(out)


def write_report(results_dir: Path, data: dict) -> dict[str, Path]:
    return reportfiles.write_report(
        results_dir, "hits", data, render_markdown, partial(charts.hits_chart, titles=MODE_TITLES)
    )


def publish(results_dir: Path, target: Path) -> None:
    reportfiles.publish(results_dir, "hits", target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m loadtest.hitreport results/<run>")
    folder = Path(sys.argv[1])
    for name, path in write_report(folder, json.loads((folder / "hits.json").read_text())).items():
        print(f"{name}: {path}")
