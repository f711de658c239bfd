"""The loadtest package's one percentile, and the interval every repeated figure carries.

**Percentile** (:func:`percentile`): nearest rank, the value below or at which
at least ``q`` % of the samples lie -- the ``ceil(q/100 * n)``-th smallest
sample. It is numpy's ``method="inverted_cdf"`` (Hyndman and Fan's definition
1) and what HdrHistogram and wrk report: always a value that was measured,
never an interpolation between two. tests/unit/test_stats.py checks it
against numpy. k6's ``p(N)`` is not this one: it interpolates linearly
between the two nearest ranks (k6 1.1: ``p(50)`` of 1..10 is 5.5, here 5), so
the open-loop percentiles (capacity, sweep: k6's summary) may lie up to one
rank's gap below the nearest-rank value; docs/load-testing.md says so.

**Interval** (:func:`interval`): the mean of repeated runs with a two-sided
95 % Student-t confidence interval, ``mean ± t(0.975, n-1) * s / sqrt(n)``.
Repeats of a benchmark step are few (3 to 10), so the t quantile, not 1.96.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# t(0.975, df) for df = 1..30 (two-sided 95 %); above 30 the normal 1.96 is
# within 2 % of it.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    # round(): q * n / 100 computed in floating point may land a hair above an
    # integer (e.g. 0.07 * 100 -> 7.000000000000001); the rank is that integer.
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[min(rank, len(ordered)) - 1]


def t_quantile(df: int) -> float:
    """t(0.975, df): the factor of a two-sided 95 % interval."""
    if df < 1:
        raise ValueError("an interval needs at least two values")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` repeats and its 95 % confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95 % t-interval of repeated figures; a single figure has no
    spread (low = high = the value, n = 1); None for none."""
    data = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not data:
        return None
    mean = statistics.fmean(data)
    if len(data) == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile(len(data) - 1) * statistics.stdev(data) / math.sqrt(len(data))
    return Interval(mean, mean - half, mean + half, len(data))


def means_with_spread(
    samples: dict[str, list[float | None]], digits: int | None = None
) -> tuple[dict[str, float | None], dict[str, dict]]:
    """Each figure's mean over its samples (None without one), and, for a figure
    with two samples or more, its 95 % interval (:meth:`Interval.to_dict`):
    what a benchmark's repeated rounds or batches report. ``digits`` rounds both."""
    means: dict[str, float | None] = {}
    spread: dict[str, dict] = {}
    for name, values in samples.items():
        found = interval([v for v in values if v is not None])
        if found is None:
            means[name] = None
            continue
        figures = found.to_dict()
        if digits is not None:
            figures = {k: round(v, digits) if k != "n" else v for k, v in figures.items()}
        means[name] = figures["mean"]
        if found.n >= 2:
            spread[name] = figures
    return means, spread


def ratio_interval(values: Sequence[float]) -> Interval | None:
    """Geometric mean and 95 % t-interval of repeated ratios, taken on their
    logarithms: a ratio's interval stays above 0 and is as wide for 2x as for
    0.5x (an arithmetic interval over 2 rounds, t = 12.7, gave -0.7x to 21x).
    None for none; ratios must be positive."""
    data = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not data:
        return None
    if min(data) <= 0:
        raise ValueError(f"ratios must be positive, got {min(data)}")
    logs = [math.log(v) for v in data]
    centre = statistics.fmean(logs)
    if len(logs) == 1:
        return Interval(data[0], data[0], data[0], 1)
    half = t_quantile(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), len(logs))


def ratios_interval(values: Iterable[float]) -> Interval | None:
    """``ratio_interval``, but a ratio of 0 (a round in which a system served
    nothing), which has no logarithm, gives the plain mean and interval."""
    data = list(values)
    return ratio_interval(data) if all(v > 0 for v in data) else interval(data)


def per_second(timestamps: Iterable[float], start: float, end: float) -> list[int]:
    """How many events completed in each whole second of [start, end): the
    throughput series of a run from its completion times (not a moving
    average: a second in which nothing completed counts 0)."""
    seconds = max(0, math.ceil(end - start))
    counts = [0] * seconds
    for at in timestamps:
        index = math.floor(at - start)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts
