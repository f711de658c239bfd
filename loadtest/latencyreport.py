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
from .numbers import clean, ms, ratio_text, with_range
from .stats import Interval, means_with_spread, ratio_interval

CACHE_RESULT_NAMES = metrics.RESULTS
QUERIES_CSV = "db_queries.csv"  # PostgreSQL's count of slow queries, sampled each second
CHARTS = {
    "latency_over_time": "latency_over_time.png",
    "db_queries_per_second": "db_queries_per_second.png",
    "requests_per_second": "requests_per_second.png",
    "latency_summary": "latency_summary.png",
}
AVERAGED = ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms")  # per round: their mean and interval


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
    # With --rounds: 95 % intervals of the rounds' figures (AVERAGED, hit_ratio,
    # queries_per_second) and each round's own figures.
    spread: dict[str, dict] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)

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


def combine_rounds(runs: list[RunResult]) -> RunResult:
    """One strategy's row from its rounds (``--rounds``): counts summed (so the hit
    ratio and DB queries/s are over every round's requests), the worst maximum,
    and the mean of each round's rate and percentiles, with 95 % t-intervals
    under ``spread`` (for the hit ratio and DB queries/s too, from the rounds'
    own values). Charts over time draw the first round."""
    if not runs:
        raise ValueError("a strategy needs at least one round")
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    row = RunResult(
        strategy=first.strategy,
        directory=first.directory,
        ttl_s=first.ttl_s,
        started_epoch=first.started_epoch,
        requests=sum(r.requests for r in runs),
        failures=sum(r.failures for r in runs),
        duration_s=sum(r.duration_s for r in runs),
        max_ms=max(r.max_ms for r in runs),
        slow_calls=None
        if any(r.slow_calls is None for r in runs)
        else sum(r.slow_calls or 0 for r in runs),
        cache_results=_summed(r.cache_results for r in runs),
        edge_results=_summed(r.edge_results for r in runs),
        failure_reasons={k: int(v) for k, v in _summed(r.failure_reasons for r in runs).items()},
        locust_exit_code=next((r.locust_exit_code for r in runs if r.locust_exit_code), 0),
        threshold_breaches=[
            f"round {i}: {breach}" for i, r in enumerate(runs, 1) for breach in r.threshold_breaches
        ],
    )
    samples: dict[str, list[float | None]] = {
        key: [None if math.isnan(getattr(r, key)) else getattr(r, key) for r in runs]
        for key in AVERAGED
    }
    samples["hit_ratio"] = [r.hit_ratio for r in runs]
    samples["queries_per_second"] = [r.queries_per_second for r in runs]
    means, row.spread = means_with_spread(samples, digits=4)
    for key in AVERAGED:
        setattr(row, key, math.nan if means[key] is None else means[key])
    row.rounds = [
        {k: v for k, v in r.to_dict().items() if k not in ("spread", "rounds")} for r in runs
    ]
    return row


def _summed(counts) -> dict[str, float]:
    total: dict[str, float] = {}
    for found in counts:
        for key, value in found.items():
            total[key] = total.get(key, 0) + value
    return total


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _cell(r: RunResult, key: str, value: float | None, fmt) -> str:
    """A figure and, from rounds, its 95 % interval, cut where no value can be
    (below 0; a ratio above 100 %)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return with_range(value, r.spread.get(key), fmt, 1.0 if key == "hit_ratio" else None)


def summary_table(results: list[RunResult]) -> str:
    lines = [
        "| strategy | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | failures "
        "| slow queries | DB queries/s | hit ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        slow = "n/a" if r.slow_calls is None else str(r.slow_calls)
        lines.append(
            f"| {r.strategy} | {r.requests:,} | {_cell(r, 'rps', r.rps, lambda v: f'{v:,.1f}')} "
            f"| {_cell(r, 'p50_ms', r.p50_ms, ms)} | {_cell(r, 'p95_ms', r.p95_ms, ms)} "
            f"| {_cell(r, 'p99_ms', r.p99_ms, ms)} | {ms(r.max_ms)} | {r.failures} | {slow} "
            f"| {_cell(r, 'queries_per_second', r.queries_per_second, lambda v: f'{v:.2f}')} "
            f"| {_cell(r, 'hit_ratio', r.hit_ratio, _ratio)} |"
        )
    return "\n".join(lines)


def p50_ratio_intervals(results: list[RunResult], baseline: str = "none") -> dict[str, Interval]:
    """How many times lower each strategy's p50 is than the baseline's: over
    rounds, the geometric mean of each round's ratio (round i of the baseline
    against round i of the strategy) and its 95 % interval."""
    base = next((r for r in results if r.strategy == baseline), None)
    if base is None:
        return {}
    found = {}
    for r in results:
        if r.strategy == baseline:
            continue
        pairs = (
            zip(base.rounds, r.rounds, strict=False)
            if base.rounds and r.rounds
            else [({"p50_ms": base.p50_ms}, {"p50_ms": r.p50_ms})]
        )
        ratios = [
            b["p50_ms"] / s["p50_ms"]
            for b, s in pairs
            if _positive(b.get("p50_ms")) and _positive(s.get("p50_ms"))
        ]
        interval = ratio_interval(ratios)
        if interval is not None:
            found[r.strategy] = interval
    return found


def _positive(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and value > 0


def p50_ratios(results: list[RunResult], baseline: str = "none") -> dict[str, float]:
    return {k: v.mean for k, v in p50_ratio_intervals(results, baseline).items()}


def render_markdown(meta: dict, results: list[RunResult], links: bool = True) -> str:
    out = [f"# Benchmark: {', '.join(r.strategy for r in results)} under the same load", ""]
    out += [
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Load**: Locust {meta['locust_version']}, scenario `{meta['scenario']}` "
        f"({', '.join(meta['user_classes'])}), {meta['users']} users spawned at "
        f"{meta['spawn_rate']}/s, {meta['duration_s']:g} s per strategy"
        + (
            f" in each of {meta['rounds']} rounds (every strategy once per round)"
            if meta.get("rounds", 1) > 1
            else ""
        )
        + f", think time {meta['wait_min']:g}-{meta['wait_max']:g} s, against {meta['host']}",
        f"- **Lab**: slow query {meta['delay_s']:g} s (`SLOW_QUERY_SECONDS`), cache TTL "
        f"{meta['ttl']} (`CACHE_TTL_SECONDS`), {meta['app_containers']} app container(s), "
        f"Redis flushed before each run",
        f"- **Command**: `{meta['command']}`",
        "",
        summary_table(results),
        "",
    ]
    for strategy, ratio in p50_ratio_intervals(results).items():
        out.append(
            f"- p50 of `none` / p50 of `{strategy}`: **{ratio_text(ratio.mean)}**"
            + (
                f" (95 % CI {ratio_text(ratio.low)}–{ratio_text(ratio.high)}, {ratio.n} rounds)"
                if ratio.n >= 2
                else ""
            )
        )
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
        "`cachelab_edge_requests_total`)."
        + (
            " Over rounds: each rate, percentile, DB queries/s and hit ratio is the "
            "rounds' mean (the hit ratio and DB queries/s over every round's counts) "
            "with its 95 % t-interval in parentheses; counts are summed, *max* is the "
            "worst round's, a ratio is the geometric mean of the rounds' own ratios; "
            "the charts over time draw round 1, the summary chart the means with "
            "their intervals."
            if meta.get("rounds", 1) > 1
            else ""
        ),
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
                intervals={
                    key: (found["low"], found["high"])
                    for key in ("p50_ms", "p95_ms", "p99_ms")
                    if (found := r.spread.get(key))
                },
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
        "p50_ratio_spread": {k: v.to_dict() for k, v in p50_ratio_intervals(results).items()},
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
