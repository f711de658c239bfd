"""The report of ``python -m loadtest.bench latency``: summary.md, summary.json, charts.

Kept apart from the runner (:mod:`loadtest.latency`) so a report can be
re-rendered from a results folder without a stack:
``python -m loadtest.latencyreport results/<run>``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cachelab import metrics

from . import latencycharts, locustcsv
from .numbers import clean, ms, ratio_text

CACHE_RESULT_NAMES = metrics.RESULTS
QUERIES_CSV = "db_queries.csv"  # PostgreSQL's count of slow queries, sampled each second
CHARTS = {
    "latency_over_time": "latency_over_time.png",
    "db_queries_per_second": "db_queries_per_second.png",
    "requests_per_second": "requests_per_second.png",
    "latency_summary": "latency_summary.png",
}


@dataclass
class RunResult:
    """One strategy's run: figures from every request, plus the lab's own counters."""

    strategy: str
    directory: str  # relative to the results folder
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    avg_ms: float = math.nan
    slow_calls: int | None = None
    duration_s: float = math.nan
    ttl_s: float | None = None
    started_epoch: float | None = None  # the charts' origin
    cache_results: dict[str, float] = field(default_factory=dict)
    edge_results: dict[str, float] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    locust_exit_code: int = 0
    threshold_breaches: list[str] = field(default_factory=list)
    load: dict = field(default_factory=dict)

    @property
    def hit_ratio(self) -> float | None:
        """The lab's one definition (cachelab.metrics.hit_ratio) over the run,
        with the answers Nginx's edge cache gave (the ``edge`` strategy)."""
        return metrics.hit_ratio(self.cache_results, metrics.edge_served(self.edge_results))

    @property
    def queries_per_second(self) -> float | None:
        if self.slow_calls is None or not self.duration_s or math.isnan(self.duration_s):
            return None
        return self.slow_calls / self.duration_s

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hit_ratio"] = self.hit_ratio
        return data

    def fill(self, run_dir: Path) -> RunResult:
        """Figures from the run's requests.csv; failure reasons from Locust's CSV."""
        found = locustcsv.figures(
            locustcsv.read_requests(run_dir / locustcsv.REQUESTS_CSV), self.duration_s
        )
        for name, value in asdict(found).items():
            setattr(self, name, value)
        self.failure_reasons = locustcsv.read_failures(
            run_dir / f"{locustcsv.CSV_PREFIX}_failures.csv"
        )
        return self


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def summary_table(results: list[RunResult]) -> str:
    lines = [
        "| strategy | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | failures "
        "| slow queries | DB queries/s | hit ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        slow = "n/a" if r.slow_calls is None else str(r.slow_calls)
        qps = r.queries_per_second
        lines.append(
            f"| {r.strategy} | {r.requests:,} | {r.rps:,.1f} | {ms(r.p50_ms)} "
            f"| {ms(r.p95_ms)} | {ms(r.p99_ms)} | {ms(r.max_ms)} | {r.failures} "
            f"| {slow} | {'n/a' if qps is None else f'{qps:.2f}'} | {_ratio(r.hit_ratio)} |"
        )
    return "\n".join(lines)


def p50_ratios(results: list[RunResult], baseline: str = "none") -> dict[str, float]:
    """How many times lower each strategy's p50 is than the baseline's."""
    base = next((r for r in results if r.strategy == baseline), None)
    if base is None or not base.p50_ms or math.isnan(base.p50_ms):
        return {}
    return {
        r.strategy: base.p50_ms / r.p50_ms
        for r in results
        if r.strategy != baseline and r.p50_ms and not math.isnan(r.p50_ms)
    }


def render_markdown(meta: dict, results: list[RunResult], links: bool = True) -> str:
    out = [f"# Benchmark: {', '.join(r.strategy for r in results)} under the same load", ""]
    out += [
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Load**: Locust {meta['locust_version']}, scenario `{meta['scenario']}` "
        f"({', '.join(meta['user_classes'])}), {meta['users']} users spawned at "
        f"{meta['spawn_rate']}/s, {meta['duration_s']:g} s per strategy, think time "
        f"{meta['wait_min']:g}-{meta['wait_max']:g} s, against {meta['host']}",
        f"- **Lab**: slow query {meta['delay_s']:g} s (`SLOW_QUERY_SECONDS`), cache TTL "
        f"{meta['ttl']} (`CACHE_TTL_SECONDS`), {meta['app_containers']} app container(s), "
        f"Redis flushed before each run",
        f"- **Command**: `{meta['command']}`",
        "",
        summary_table(results),
        "",
    ]
    for strategy, ratio in p50_ratios(results).items():
        out.append(f"- p50 of `none` / p50 of `{strategy}`: **{ratio_text(ratio)}**")
    out += [
        "",
        "Columns: *req/s* is the requests that completed over the run's length; the "
        "percentiles are the one definition of loadtest.stats (nearest rank) over every "
        "request's response time, recorded by the locustfile (Locust is a closed loop: "
        "its users wait for each answer, so these are latencies under that loop -- the "
        "open-loop figures are in capacity.md); ratios are given to two significant "
        "figures; *slow queries* is PostgreSQL's own count (`pg_stat_statements`) over "
        "the run, including queries still running when Locust stopped, and *DB "
        "queries/s* that count over the run's length; *hit ratio* is the lab's one "
        "definition (docs/caching.md): answers from a cache (Nginx's edge cache, a "
        "worker's memory, Redis, or a worker's copy during an outage, fresh or stale) "
        "over every request the lab counted (`cachelab_cache_requests_total`, "
        "`cachelab_edge_requests_total`).",
        "",
        "App lookups during each run, by result (`cachelab_cache_requests_total`; "
        "*bypass*/*local* with a cache strategy mean Redis did not answer in time; "
        "*edge* is what Nginx's micro-cache answered without the app):",
        "",
        "| strategy | " + " | ".join(CACHE_RESULT_NAMES) + " | edge |",
        "|---|" + "---:|" * (len(CACHE_RESULT_NAMES) + 1),
    ]
    for r in results:
        edge = metrics.edge_served(r.edge_results)
        out.append(
            f"| {r.strategy} | "
            + " | ".join(f"{r.cache_results.get(name, 0):,.0f}" for name in CACHE_RESULT_NAMES)
            + f" | {edge:,.0f} |"
        )
    out.append("")
    failing = [r for r in results if r.failure_reasons]
    if failing:
        out += ["Failures (Locust's `*_failures.csv`):", ""]
        for r in failing:
            out.append(
                f"- `{r.strategy}`: "
                + "; ".join(
                    f"{count} x {reason}"
                    for reason, count in sorted(
                        r.failure_reasons.items(), key=lambda item: -item[1]
                    )
                )
            )
        out.append("")
    breaches = [f"`{r.strategy}`: {b}" for r in results for b in r.threshold_breaches]
    if breaches:
        out += ["**Thresholds exceeded**: " + "; ".join(breaches), ""]
    out += [
        "![latency percentiles over time](latency_over_time.png)",
        "",
        "![database queries per second](db_queries_per_second.png)",
        "",
        "![requests per second](requests_per_second.png)",
        "",
        "![p50/p95/p99 per strategy](latency_summary.png)",
        "",
    ]
    if links:
        out += ["Per-run Locust output:", ""]
        for r in results:
            out.append(
                f"- `{r.strategy}`: [HTML report]({r.directory}/{locustcsv.HTML_REPORT}), "
                f"[requests]({r.directory}/{locustcsv.REQUESTS_CSV}), "
                f"[failures CSV]({r.directory}/{locustcsv.CSV_PREFIX}_failures.csv)"
            )
        out.append("")
    return "\n".join(out)


def chart_series(results_dir: Path, results: list[RunResult]) -> list[latencycharts.LatencyRun]:
    """What the latency charts draw, read from each run's files."""
    runs = []
    for r in results:
        folder = results_dir / r.directory
        requests = locustcsv.read_requests(folder / locustcsv.REQUESTS_CSV)
        origin = r.started_epoch or (min((q.start for q in requests), default=0.0))
        runs.append(
            latencycharts.LatencyRun(
                strategy=r.strategy,
                percentiles=locustcsv.percentiles_by_start(requests, origin),
                completions=locustcsv.completions_per_second(requests, origin),
                queries=latencycharts.read_queries(folder / QUERIES_CSV),
                ttl_s=r.ttl_s,
                rps=r.rps,
                queries_per_second=r.queries_per_second,
                p50_ms=r.p50_ms,
                p95_ms=r.p95_ms,
                p99_ms=r.p99_ms,
            )
        )
    return runs


def write_report(results_dir: Path, meta: dict, results: list[RunResult]) -> dict[str, Path]:
    """summary.md, summary.json and the charts into ``results_dir``."""
    paths = {name: results_dir / filename for name, filename in CHARTS.items()}
    latencycharts.latency_charts(paths, chart_series(results_dir, results))
    summary = results_dir / "summary.md"
    summary.write_text(render_markdown(meta, results))
    data = {
        "meta": meta,
        "runs": [r.to_dict() for r in results],
        "p50_ratio_vs_none": p50_ratios(results),
    }
    (results_dir / "summary.json").write_text(
        json.dumps(clean(data), indent=2, allow_nan=False, default=str)
    )
    return {"summary": summary, "json": results_dir / "summary.json", **paths}


def publish(results_dir: Path, meta: dict, results: list[RunResult], target: Path) -> None:
    """Copy the summary (without links to the git-ignored per-run files) and the charts."""
    target.mkdir(parents=True, exist_ok=True)
    for filename in CHARTS.values():
        shutil.copy2(results_dir / filename, target / filename)
    (target / "summary.md").write_text(render_markdown(meta, results, links=False))
    shutil.copy2(results_dir / "summary.json", target / "summary.json")


def load(results_dir: Path) -> tuple[dict, list[RunResult]]:
    data = json.loads((results_dir / "summary.json").read_text())
    fields_ = set(RunResult.__dataclass_fields__)
    results = []
    for run in data["runs"]:
        values = {k: v for k, v in run.items() if k in fields_}
        for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms", "duration_s"):
            values[key] = math.nan if values.get(key) is None else values[key]
        results.append(RunResult(**values))
    return data["meta"], results


def rebuild(results_dir: Path) -> dict[str, Path]:
    """Re-render a results folder from its summary.json and per-run files."""
    meta, results = load(results_dir)
    return write_report(results_dir, meta, results)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m loadtest.latencyreport results/<run>")
    for name, path in rebuild(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
