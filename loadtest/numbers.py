"""How the reports write figures: no more digits than the measurement holds.

A ratio of two measured figures is given to two significant figures (10 s /
3 ms is "3,300×", not "3,333×": the 3 ms is itself rounded); a latency to the
resolution its size deserves; an interval as ``mean ± half-width``; a missing
figure as "n/a" and "no value because nothing happened" as "none".
"""

from __future__ import annotations

import math


def significant(value: float, digits: int = 2) -> float:
    """``value`` rounded to ``digits`` significant figures."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def grouped(value: float) -> str:
    """A rounded number with thousands separators and no trailing ``.0``."""
    text = f"{value:,.6f}".rstrip("0").rstrip(".")
    return text


def ratio_text(value: float | None, digits: int = 2) -> str:
    """``3333.3`` -> ``3,300×``; ``1.2941`` -> ``1.3×``."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{grouped(significant(value, digits))}×"


def ms(value: float | None) -> str:
    """A latency in ms: whole ms from 10 ms, one decimal below."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def rate(value: float | None) -> str:
    """Requests per second, to three significant figures (no false precision)."""
    if value is None or math.isnan(value):
        return "n/a"
    return grouped(significant(value, 3)) if value >= 100 else f"{value:.1f}"


def plus_minus(mean: float | None, half: float | None, fmt=rate) -> str:
    """``mean ± half`` with each part in ``fmt``; the mean alone without spread.

    Every figure given this way (a rate, a latency) is positive: an interval
    that reaches below 0 (a few noisy repeats, t = 4.3 for three) is shown cut
    at 0, ``mean (0–high)``, which keeps its 95 % coverage and says no
    impossible value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if not half:
        return fmt(mean)
    if 0 <= mean < half:
        return f"{fmt(mean)} (0–{fmt(mean + half)})"
    return f"{fmt(mean)} ± {fmt(half)}"


def interval_text(cell: dict | None, fmt=rate, unit: str = "") -> str:
    """A results cell (``mean``, ``low``, ``high`` of a 95 % interval) as
    :func:`plus_minus` text with its unit; "n/a" alone when there is no figure."""
    if not cell:
        return "n/a"
    text = plus_minus(cell["mean"], (cell["high"] - cell["low"]) / 2, fmt)
    return f"{text} {unit}" if unit and text != "n/a" else text


def with_range(value: float, found: dict | None, fmt, top: float | None = None) -> str:
    """``value (low–high)``: a figure and its 95 % interval (``found``: ``low``,
    ``high``), cut where no value can be (below 0; above ``top``); the figure
    alone without an interval, or where the interval shows no spread at the
    figure's precision."""
    text = fmt(value)
    if not found:
        return text
    high = found["high"] if top is None else min(found["high"], top)
    low, high = fmt(max(found["low"], 0)), fmt(high)
    return text if low == high else f"{text} ({low}–{high})"


def clean(value):
    """JSON has no NaN: missing figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
