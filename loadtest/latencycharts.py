"""The latency benchmark's charts (Locust per strategy): throughput, latency and
database queries over time, and the latency summary. The rules every chart
follows, and the helpers that draw them, are in :mod:`loadtest.charts`."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from .charts import dot_plot, finish, pyplot


@dataclass
class LatencyRun:
    strategy: str
    percentiles: list[tuple[float, dict[float, float]]]  # per second of start time
    completions: list[int]  # requests completed in each second
    queries: list[tuple[float, float]]  # (elapsed s, slow queries finished so far)
    ttl_s: float | None
    rps: float
    queries_per_second: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # from rounds


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


def latency_charts(paths: dict[str, Path], runs: list[LatencyRun]) -> None:
    plt = pyplot()

    # Latency percentiles per second of send time, one panel per strategy.
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(9, 2.6 * len(runs) + 0.8), sharex=True, sharey=True, squeeze=False
    )
    for ax, run in zip(axes[:, 0], runs, strict=True):
        seconds = [second for second, _ in run.percentiles]
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            ax.plot(
                seconds,
                [found.get(q, math.nan) for _, found in run.percentiles],
                style,
                marker=".",
                markersize=2,
                label=f"p{q}",
            )
        end = seconds[-1] if seconds else 0.0
        marks = [] if run.strategy == "none" else expiry_marks(run.queries, run.ttl_s)
        for index, mark in enumerate(m for m in marks if m <= end):
            ax.axvline(
                mark,
                color="grey",
                linestyle="-.",
                linewidth=0.8,
                label="TTL expiry" if index == 0 else None,
            )
        if any(found for _, found in run.percentiles):
            ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(
            f"{run.strategy}: response time of the requests sent in each second", fontsize=10
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since start (when the request was sent)")
    finish(fig, paths["latency_over_time"])

    # PostgreSQL's slow queries per second over time: what the cache saves.
    fig, ax = plt.subplots(figsize=(9, 4))
    for run in runs:
        series = queries_per_second(run.queries)
        qps = run.queries_per_second
        ax.step(
            [t for t, _ in series],
            [v for _, v in series],
            where="post",
            label=f"{run.strategy} ({'n/a' if qps is None else f'{qps:.2f}'}/s over the run)",
        )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("slow queries finished per second")
    ax.set_title("Database load per strategy (PostgreSQL's pg_stat_statements)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, paths["db_queries_per_second"])

    # Requests completed in each second, all strategies on one axis.
    fig, ax = plt.subplots(figsize=(9, 4))
    for run in runs:
        ax.step(
            range(len(run.completions)),
            run.completions,
            where="post",
            label=f"{run.strategy} (mean {run.rps:,.1f}/s)",
        )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests completed in the second")
    ax.set_title(
        "Throughput per strategy: requests completed each second (0 = none completed)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    finish(fig, paths["requests_per_second"])

    # Whole-run percentiles per strategy: dots on a log axis.
    fig, ax = plt.subplots(figsize=(9, 4))
    dot_plot(
        ax,
        [run.strategy for run in runs],
        {
            "p50": [run.p50_ms for run in runs],
            "p95": [run.p95_ms for run in runs],
            "p99": [run.p99_ms for run in runs],
        },
        log=True,
        fmt=lambda v: f"{v:,.0f}" if v >= 10 else f"{v:.1f}",
        errors={
            name: [run.intervals.get(f"{name}_ms") for run in runs]
            for name in ("p50", "p95", "p99")
        },
    )
    ax.set_ylabel("response time, ms (log)")
    rounds = any(run.intervals for run in runs)
    ax.set_title(
        "Response time percentiles over the whole run"
        + (": means of the rounds, 95 % intervals" if rounds else ""),
        fontsize=10,
    )
    ax.legend(fontsize=8)
    finish(fig, paths["latency_summary"])
