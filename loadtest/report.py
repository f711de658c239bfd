"""Reading Locust's CSV output and writing the benchmark report (Markdown, JSON, PNG).

Used by :mod:`loadtest.bench`; kept apart so the report can be rebuilt from a
results folder without a stack (``python -m loadtest.report results/<run>``).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cachelab import metrics

CSV_PREFIX = "locust"  # <run dir>/locust_stats.csv, locust_stats_history.csv, ...
HTML_REPORT = "report.html"
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
    """One strategy's run: Locust's aggregated figures plus the lab's own counters."""

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
    cache_results: dict[str, float] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    locust_exit_code: int = 0
    threshold_breaches: list[str] = field(default_factory=list)

    @property
    def hit_ratio(self) -> float | None:
        """The lab's one definition (cachelab.metrics.hit_ratio) over the run."""
        return metrics.hit_ratio(self.cache_results)

    @property
    def queries_per_second(self) -> float | None:
        if self.slow_calls is None or not self.duration_s or math.isnan(self.duration_s):
            return None
        return self.slow_calls / self.duration_s

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hit_ratio"] = self.hit_ratio
        return data


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_aggregated(stats_csv: Path) -> dict[str, str]:
    """The ``Aggregated`` row of Locust's ``*_stats.csv``."""
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                return row
    raise ValueError(f"{stats_csv}: no Aggregated row")


def read_history(history_csv: Path) -> list[dict[str, float]]:
    """Aggregated rows of ``*_stats_history.csv`` as numbers, with ``elapsed`` seconds."""
    rows: list[dict[str, float]] = []
    with history_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated":
                continue
            rows.append(
                {
                    key: _number(value or "")
                    for key, value in row.items()
                    if key not in ("Type", "Name")
                }
            )
    if rows:
        start = rows[0]["Timestamp"]
        for numbers in rows:
            numbers["elapsed"] = numbers["Timestamp"] - start
    return rows


def fill_from_csv(result: RunResult, run_dir: Path) -> RunResult:
    row = read_aggregated(run_dir / f"{CSV_PREFIX}_stats.csv")
    result.requests = int(_number(row["Request Count"]) or 0)
    result.failures = int(_number(row["Failure Count"]) or 0)
    result.rps = _number(row["Requests/s"])
    result.p50_ms = _number(row["50%"])
    result.p95_ms = _number(row["95%"])
    result.p99_ms = _number(row["99%"])
    result.max_ms = _number(row["Max Response Time"])
    result.avg_ms = _number(row["Average Response Time"])
    result.failure_reasons = read_failures(run_dir / f"{CSV_PREFIX}_failures.csv")
    return result


def read_failures(failures_csv: Path) -> dict[str, int]:
    """Error message -> occurrences, over every request name, from ``*_failures.csv``."""
    reasons: dict[str, int] = {}
    if not failures_csv.exists():
        return reasons
    with failures_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            error = row.get("Error") or "?"
            # CatchResponseError('HTTP 503 database_unavailable') -> the message
            match = re.fullmatch(r"CatchResponseError\((['\"])(.*)\1\)", error)
            error = match.group(2) if match else error
            reasons[error] = reasons.get(error, 0) + int(_number(row.get("Occurrences") or "0"))
    return reasons


# -- Markdown ----------------------------------------------------------------
def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


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
            f"| {r.strategy} | {r.requests:,} | {r.rps:,.1f} | {_ms(r.p50_ms)} "
            f"| {_ms(r.p95_ms)} | {_ms(r.p99_ms)} | {_ms(r.max_ms)} | {r.failures} "
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
        f"- **Machine**: {meta['machine']}",
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
    ratios = p50_ratios(results)
    for strategy, ratio in ratios.items():
        out.append(f"- p50 of `none` / p50 of `{strategy}`: **{ratio:,.0f}x**")
    out += [
        "",
        "Columns: Locust's aggregated figures for the whole run (percentiles are "
        "Locust's approximations); *slow queries* is PostgreSQL's own count "
        "(`pg_stat_statements`) over the run, including queries still running when "
        "Locust stopped, and *DB queries/s* that count over the run's length; *hit ratio* "
        "is the lab's one definition (docs/caching.md): answers from a cache (memory, "
        "Redis, or a worker's copy during an outage, fresh or stale) over every lookup "
        "the app counted (`cachelab_cache_requests_total`).",
        "",
    ]
    out += [
        "App lookups during each run, by result (`cachelab_cache_requests_total`; "
        "*bypass*/*local* with a cache strategy mean Redis did not answer in time):",
        "",
        "| strategy | " + " | ".join(CACHE_RESULT_NAMES) + " |",
        "|---|" + "---:|" * len(CACHE_RESULT_NAMES),
    ]
    for r in results:
        out.append(
            f"| {r.strategy} | "
            + " | ".join(f"{r.cache_results.get(name, 0):,.0f}" for name in CACHE_RESULT_NAMES)
            + " |"
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
                f"- `{r.strategy}`: [HTML report]({r.directory}/{HTML_REPORT}), "
                f"[stats CSV]({r.directory}/{CSV_PREFIX}_stats.csv), "
                f"[history CSV]({r.directory}/{CSV_PREFIX}_stats_history.csv), "
                f"[failures CSV]({r.directory}/{CSV_PREFIX}_failures.csv)"
            )
        out.append("")
    return "\n".join(out)


# -- charts ------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_queries(queries_csv: Path) -> list[tuple[float, float]]:
    """``(elapsed s, slow queries finished so far)`` samples, or none."""
    if not queries_csv.exists():
        return []
    with queries_csv.open(newline="") as handle:
        return [(float(row["elapsed_s"]), float(row["queries"])) for row in csv.DictReader(handle)]


def queries_per_second(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [
        (t1, max(0.0, (q1 - q0) / (t1 - t0)))
        for (t0, q0), (t1, q1) in zip(samples, samples[1:], strict=False)
        if t1 > t0
    ]


def expiry_marks(samples: list[tuple[float, float]], ttl: float | None) -> list[float]:
    """When each entry a query wrote turns stale: each query's completion + TTL
    (soft expiry; jitter makes it up to 10 % earlier)."""
    if not ttl:
        return []
    return [t1 + ttl for (t0, q0), (t1, q1) in zip(samples, samples[1:], strict=False) if q1 > q0]


def write_charts(results_dir: Path, results: list[RunResult]) -> dict[str, Path]:
    plt = _pyplot()
    histories = {
        r.strategy: read_history(results_dir / r.directory / f"{CSV_PREFIX}_stats_history.csv")
        for r in results
    }
    queries = {r.strategy: read_queries(results_dir / r.directory / QUERIES_CSV) for r in results}
    paths = {name: results_dir / filename for name, filename in CHARTS.items()}

    # Latency percentiles over time, one panel per strategy (log scale: ms vs s).
    fig, axes = plt.subplots(
        len(results),
        1,
        figsize=(9, 2.6 * len(results) + 0.8),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, r in zip(axes[:, 0], results, strict=True):
        rows = [row for row in histories[r.strategy] if not math.isnan(row.get("50%", math.nan))]
        for column, style in (("50%", "-"), ("95%", "--"), ("99%", ":")):
            # Locust writes 0 when no request completed in its window: a gap, not 0 ms.
            ax.plot(
                [row["elapsed"] for row in rows],
                [row[column] if row[column] > 0 else math.nan for row in rows],
                style,
                label=f"p{column.rstrip('%')}",
            )
        end = rows[-1]["elapsed"] if rows else 0.0
        marks = [] if r.strategy == "none" else expiry_marks(queries[r.strategy], r.ttl_s)
        for index, mark in enumerate(m for m in marks if m <= end):
            ax.axvline(
                mark,
                color="grey",
                linestyle="-.",
                linewidth=0.8,
                label="TTL expiry" if index == 0 else None,
            )
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(
            f"{r.strategy}: response time percentiles (Locust's sliding window)", fontsize=10
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(paths["latency_over_time"], dpi=110)
    plt.close(fig)

    # PostgreSQL's slow queries per second over time: what the cache saves.
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in results:
        series = queries_per_second(queries[r.strategy])
        qps = r.queries_per_second
        ax.step(
            [t for t, _ in series],
            [v for _, v in series],
            where="post",
            label=f"{r.strategy} ({'n/a' if qps is None else f'{qps:.2f}'}/s over the run)",
        )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("slow queries finished per second")
    ax.set_title("Database load per strategy (PostgreSQL's pg_stat_statements)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["db_queries_per_second"], dpi=110)
    plt.close(fig)

    # Requests per second over time, all strategies on one axis.
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in results:
        rows = histories[r.strategy]
        ax.plot(
            [row["elapsed"] for row in rows],
            [0.0 if math.isnan(row["Requests/s"]) else row["Requests/s"] for row in rows],
            label=f"{r.strategy} (mean {r.rps:,.1f}/s)",
        )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests/s")
    ax.set_title("Throughput per strategy (same users and think time)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["requests_per_second"], dpi=110)
    plt.close(fig)

    # Whole-run p50/p95/p99 per strategy, grouped bars on a log scale.
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.25
    for i, (label, attr) in enumerate((("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))):
        values = [getattr(r, attr) for r in results]
        xs = [j + (i - 1) * width for j in range(len(results))]
        bars = ax.bar(
            xs, [0.1 if math.isnan(v) else max(v, 0.1) for v in values], width, label=label
        )
        ax.bar_label(bars, labels=[_ms(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(results)), [r.strategy for r in results])
    ax.set_yscale("log")
    ax.set_ylabel("response time, ms (log)")
    ax.set_title("Response time percentiles over the whole run", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["latency_summary"], dpi=110)
    plt.close(fig)
    return paths


def write_report(results_dir: Path, meta: dict, results: list[RunResult]) -> dict[str, Path]:
    """summary.md, summary.json and the charts into ``results_dir``."""
    charts = write_charts(results_dir, results)
    summary = results_dir / "summary.md"
    summary.write_text(render_markdown(meta, results))
    data = {
        "meta": meta,
        "runs": [r.to_dict() for r in results],
        "p50_ratio_vs_none": p50_ratios(results),
    }
    (results_dir / "summary.json").write_text(
        json.dumps(_clean(data), indent=2, allow_nan=False, default=str)
    )
    return {"summary": summary, "json": results_dir / "summary.json", **charts}


def _clean(value):
    """JSON has no NaN: missing figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def rebuild(results_dir: Path) -> dict[str, Path]:
    """Re-render a results folder from its summary.json (and the CSVs it names)."""
    data = json.loads((results_dir / "summary.json").read_text())
    fields_ = set(RunResult.__dataclass_fields__)
    results = []
    for run in data["runs"]:
        values = {k: v for k, v in run.items() if k in fields_}
        for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms"):
            values[key] = math.nan if values.get(key) is None else values[key]
        result = RunResult(**values)
        if "failure_reasons" not in run:
            result.failure_reasons = read_failures(
                results_dir / result.directory / f"{CSV_PREFIX}_failures.csv"
            )
        results.append(result)
    return write_report(results_dir, data["meta"], results)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m loadtest.report results/<run>")
    for name, path in rebuild(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
