"""Every chart the benchmarks draw, finished by one helper.

Rules the pictures follow (issue 20):

* values on a log axis are **dots**, never bars (a bar's length on a log axis
  means nothing);
* "nothing happened" (no stale read, no request in a second) is drawn as
  **none** -- a labelled mark, not a bar or a point at 0;
* throughput over time is the count of requests **completed** in each second;
* an interval is drawn as an error bar around its mean;
* every figure is finished by :func:`finish` (title, layout, size, file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

DPI = 110
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, path: Path, title: str | None = None) -> Path:
    """The one way every chart ends: its title, a tight layout, a PNG, closed."""
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def mark_none(ax, x: float, text: str = "none") -> None:
    """Say "none" at ``x`` at the bottom of the axis (no value to draw)."""
    ax.annotate(
        text,
        (x, 0),
        xycoords=("data", "axes fraction"),
        xytext=(0, 6),
        textcoords="offset points",
        ha="center",
        fontsize=8,
        color="#555555",
        style="italic",
    )


def dot_plot(
    ax,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    log: bool,
    fmt: Callable[[float], str],
    errors: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    none_text: str = "none",
) -> None:
    """One column per label, one dot per series; None values are marked "none"
    (once per column); ``errors`` gives (low, high) bars around a dot."""
    offsets = [(i - (len(series) - 1) / 2) * 0.18 for i in range(len(series))]
    for (name, values), offset, color in zip(series.items(), offsets, COLORS, strict=False):
        xs, ys = [], []
        for j, value in enumerate(values):
            if (
                value is None
                or (isinstance(value, float) and math.isnan(value))
                or (log and value <= 0)
            ):
                continue
            xs.append(j + offset)
            ys.append(value)
            ax.annotate(
                fmt(value),
                (j + offset, value),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=6,
                va="center",
            )
            bounds = (errors or {}).get(name)
            pair = bounds[j] if bounds else None
            if pair is not None:
                low, high = pair
                ax.errorbar(
                    j + offset,
                    value,
                    yerr=[[max(0.0, value - low)], [max(0.0, high - value)]],
                    color=color,
                    capsize=2,
                    linewidth=1,
                )
        ax.plot(xs, ys, "o", color=color, label=name, markersize=5)
    for j in range(len(labels)):
        if all(
            values[j] is None
            or (isinstance(values[j], float) and math.isnan(values[j]))  # type: ignore[arg-type]
            or (log and values[j] <= 0)  # type: ignore[operator]
            for values in series.values()
        ):
            mark_none(ax, j, none_text)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if log and any(line.get_ydata().size for line in ax.lines):
        ax.set_yscale("log")
    ax.grid(True, axis="y", which="both", alpha=0.3)


# -- the hits benchmark (closed loop) ----------------------------------------------------
def _cell(cell: dict | None) -> tuple[float | None, tuple[float, float] | None]:
    if not cell:
        return None, None
    return cell["mean"], (cell["low"], cell["high"]) if cell.get("n", 1) > 1 else None


def hits_chart(path: Path, data: dict, titles: dict[str, str]) -> Path:
    plt = pyplot()
    modes = list(data["modes"])
    systems = data["meta"]["systems"]
    panels = (
        ("rps", "requests/s, mean ± 95 % CI (log)", True, lambda v: f"{v:,.0f}"),
        ("p99_ms", "p99 ms, mean ± 95 % CI (log)", True, lambda v: f"{v:,.1f}"),
        ("cpu_s_per_1k", "CPU s per 1,000 requests (log)", True, lambda v: f"{v:.3f}"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 5))
    for ax, (key, title, log, fmt) in zip(axes, panels, strict=True):
        series: dict[str, list[float | None]] = {}
        errors: dict[str, list[tuple[float, float] | None]] = {}
        for mode in modes:
            rows = data["modes"][mode]["rows"]
            cells = [_cell(rows[name][key]) for name in systems]
            series[titles.get(mode, mode)] = [c[0] for c in cells]
            errors[titles.get(mode, mode)] = [c[1] for c in cells]
        dot_plot(ax, systems, series, log=log, fmt=fmt, errors=errors)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7, loc="lower left")
    return finish(
        fig,
        path,
        f"Hit throughput at saturation (wrk, closed loop, {data['meta']['connections']} "
        f"connections), {data['meta']['rounds']} interleaved rounds per system",
    )


# -- the capacity benchmark (open loop) --------------------------------------------------
def capacity_chart(path: Path, data: dict) -> Path:
    """p99 against offered rate per system (log-log), each point its repeats' mean
    with a 95 % interval; the target as a line; each system's knee circled."""
    plt = pyplot()
    target = data["p99_target_ms"]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for (name, system), color in zip(data["systems"].items(), COLORS * 3, strict=False):
        levels = sorted(
            (lv for lv in system["levels"] if lv.get("p99_ms")), key=lambda lv: lv["rate"]
        )
        if not levels:
            continue
        xs = [lv["rate"] for lv in levels]
        ys = [lv["p99_ms"]["mean"] for lv in levels]
        low = [max(0.0, lv["p99_ms"]["mean"] - lv["p99_ms"]["low"]) for lv in levels]
        high = [max(0.0, lv["p99_ms"]["high"] - lv["p99_ms"]["mean"]) for lv in levels]
        ax.errorbar(
            xs,
            ys,
            yerr=[low, high],
            fmt="o-",
            color=color,
            capsize=2,
            markersize=4,
            linewidth=1,
            label=name,
        )
        failed = [lv for lv in levels if lv["verdict"] not in ("met", "missed")]
        if failed:
            ax.plot(
                [lv["rate"] for lv in failed],
                [lv["p99_ms"]["mean"] for lv in failed],
                "x",
                color=color,
                markersize=9,
            )
        knee = system.get("summary", {}).get("knee_rps")
        if knee:
            at = next(lv for lv in levels if lv["rate"] == knee)
            ax.plot(
                [knee],
                [at["p99_ms"]["mean"]],
                "o",
                markersize=13,
                markerfacecolor="none",
                markeredgecolor=color,
                markeredgewidth=1.5,
            )
            ax.annotate(
                f"{knee:,.0f}/s",
                (knee, at["p99_ms"]["mean"]),
                xytext=(0, -16),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=color,
            )
    ax.axhline(target, color="#c44e52", linestyle="--", linewidth=1)
    ax.annotate(
        f"target p99 {target:g} ms",
        (0.01, target),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
        color="#c44e52",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate, requests/s (open loop, log)")
    ax.set_ylabel("p99 latency, ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return finish(
        fig,
        path,
        "Throughput-latency curves (k6, open loop): circled, the highest rate meeting the "
        "target; x, a step that failed (errors, drops)",
    )


# -- the staleness benchmark -------------------------------------------------------------
def staleness_chart(path: Path, rows: dict[str, dict], edge_seconds: float | None) -> Path:
    """Stale reads, staleness p99 (log) and DB queries/s per variant: dots, and
    "none" where no read was stale (not a bar of 0); the 95 % interval of the
    rounds' mean as a bar where the rows have one (``spread``)."""
    plt = pyplot()
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    panels = (  # key, scale, label, log, format, title
        ("stale_ratio", 100, "stale reads", True, "{:.2g} %", "stale reads, % of reads"),
        ("staleness_p99_ms", 1, "staleness p99", True, "{:,.0f} ms", "staleness p99, ms"),
        ("db_queries_per_s", 1, "DB queries/s", False, "{:,.1f}", "database queries/s"),
    )
    for ax, (key, scale, label, log, fmt, title) in zip(axes, panels, strict=True):
        values = [rows[n].get(key) for n in names]
        if log:  # no stale read is "none", not a dot at 0 (0 DB queries/s is a figure)
            values = [None if not v else v * scale for v in values]
        dot_plot(
            ax,
            names,
            {label: values},
            log=log,
            fmt=fmt.format,
            errors={label: _spreads(rows, names, key, scale, log=log)},
            none_text="none" if log else "n/a",
        )
        ax.set_title(
            f"{title} (log; none: no stale read)" if log else f"{title} (pg_stat_statements)",
            fontsize=10,
        )
    axes[2].set_ylim(bottom=0)
    if edge_seconds and "edge" in names:
        axes[1].axhline(edge_seconds * 1000, color="#c44e52", linestyle="--", linewidth=1)
        axes[1].annotate(
            f"edge validity {edge_seconds:g} s",
            (0.01, edge_seconds * 1000),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=7,
            color="#c44e52",
        )
    return finish(fig, path, "What each invalidation mode costs in staleness and database load")


def _spreads(
    rows: dict[str, dict], names: Sequence[str], key: str, scale: float, log: bool
) -> list[tuple[float, float] | None]:
    """Each row's interval of ``key`` (times ``scale``), or None; on a log axis a
    low end at or below 0 is drawn down to a tenth of the mean."""
    bars: list[tuple[float, float] | None] = []
    for name in names:
        spread = rows[name].get("spread", {}).get(key)
        if not spread:
            bars.append(None)
            continue
        low, high = spread["low"] * scale, spread["high"] * scale
        if log and low <= 0:
            low = spread["mean"] * scale / 10
        bars.append((low, high))
    return bars


# -- the sweeps ---------------------------------------------------------------------------
def _bar(value: float, spread: dict | None, scale: float, top: float) -> tuple[float, float]:
    """The error bar's lengths below and above ``value`` from an interval (0, 0
    without), cut at 0 and at ``top``: no share, rate or count goes below 0, and
    no share above 100 %."""
    if not spread or math.isnan(value):
        return 0.0, 0.0
    low = max(0.0, spread["low"] * scale)
    high = min(top, spread["high"] * scale)
    return max(0.0, value - low), max(0.0, high - value)


def miss_ratio_chart(path: Path, data: dict) -> Path:
    """Tier 1's share of lookups against its size (log x), one line per skew; beside it,
    the overall hit ratio and the DB queries/s of the same cells."""
    plt = pyplot()
    cells = [c for c in data["cells"] if "tier1" in c["sweeps"]]
    skews = list(dict.fromkeys(c["skew"] for c in cells))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (
        (lambda c: c["tier_share"].get("memory"), "share_memory", "tier 1 (memory) hit ratio"),
        (lambda c: c["hit_ratio"], "hit_ratio", "hit ratio, all tiers"),
        (lambda c: c["db_queries_per_s"], "db_queries_per_s", "DB queries/s (pg_stat_statements)"),
    )
    for ax, (value, name, title) in zip(axes, panels, strict=True):
        share = name != "db_queries_per_s"
        scale = 100 if share else 1
        for skew, color in zip(skews, COLORS, strict=False):
            row = sorted((c for c in cells if c["skew"] == skew), key=lambda c: c["tier1"])
            ys = [math.nan if value(c) is None else value(c) * scale for c in row]
            # The batches' 95 % interval as an error bar (none: a bar of 0).
            top = 100.0 if share else math.inf
            bars = [
                _bar(y, c.get("spread", {}).get(name), scale, top)
                for y, c in zip(ys, row, strict=True)
            ]
            ax.errorbar(
                [c["tier1"] for c in row],
                ys,
                yerr=[[low for low, _ in bars], [high for _, high in bars]],
                fmt="o-",
                color=color,
                markersize=4,
                capsize=2,
                label="uniform" if skew == "uniform" else f"Zipf {skew}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("tier-1 size (copies per worker, log)")
        ax.set_ylabel("%" if share else "queries/s")
        ax.set_ylim(0, 100 if share else None)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    return finish(
        fig,
        path,
        f"Miss-ratio curves: {data['meta']['keys']:,} keys, {data['meta']['rate']:g} req/s "
        "open loop, per key skew",
    )
