"""The report of ``python -m loadtest.bench staleness``: staleness.md, .json and the chart.

Rounds are combined per variant (:func:`combine_rounds`): counts are summed,
the worst staleness is the worst of any round, and every rate, percentile and
latency is the mean of the rounds that had one, with its 95 % t-interval
(:func:`loadtest.stats.interval`) -- a round without a stale read has no
staleness percentile, and is left out of that figure's mean, not counted as 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import charts
from .numbers import clean
from .stats import means_with_spread

COLUMNS = (
    ("reads", "reads"),
    ("stale_ratio", "stale reads"),
    ("staleness_p50_ms", "staleness p50 ms"),
    ("staleness_p99_ms", "p99 ms"),
    ("staleness_max_ms", "max ms"),
    ("ryw_violations", "RYW violations"),
    ("db_queries_per_s", "DB queries/s"),
    ("write_p50_ms", "write p50 ms"),
    ("write_p99_ms", "write p99 ms"),
)
STALENESS = ("staleness_p50_ms", "staleness_p99_ms", "staleness_max_ms")
SUMMED = ("reads", "stale_reads", "writes", "own_reads", "ryw_violations", "errors", "db_queries")
AVERAGED = (
    "stale_ratio",
    "staleness_p50_ms",
    "staleness_p99_ms",
    "db_queries_per_s",
    "write_p50_ms",
    "write_p99_ms",
)


def combine_rounds(rounds: list[dict]) -> dict:
    """One variant's row from its rounds: sums, the worst staleness, and means with
    their interval under ``spread`` (a key with figures from two rounds or more).
    Each round's own figures stay under ``rounds``."""
    if not rounds:
        raise ValueError("a variant needs at least one round")
    row: dict = {key: value for key, value in rounds[0].items() if key != "load"}
    for key in SUMMED:
        values = [r[key] for r in rounds if r.get(key) is not None]
        row[key] = sum(values) if values else None
    worst = [r["staleness_max_ms"] for r in rounds if r.get("staleness_max_ms") is not None]
    row["staleness_max_ms"] = max(worst, default=None)
    means, row["spread"] = means_with_spread(
        {key: [r.get(key) for r in rounds] for key in AVERAGED}, digits=4
    )
    row.update(means)
    row["rounds"] = [{k: v for k, v in r.items() if k != "load"} for r in rounds]
    return row


def _cell(key: str, value, row: dict) -> str:
    if value is None:
        # No stale read: no staleness to give -- "none", not 0.
        if key in STALENESS and row.get("stale_reads") == 0:
            return "none"
        return "n/a"
    if key == "stale_ratio" and value == 0:
        return "none"
    if key == "ryw_violations":
        return f"{value:,} of {row.get('own_reads', 0):,}"
    text = _number(key, value)
    spread = row.get("spread", {}).get(key)
    if spread:
        text += f" ({_number(key, spread['low'])}–{_number(key, spread['high'])})"
    return text


def _number(key: str, value: float) -> str:
    value = max(value, 0)  # an interval's low end may fall below 0: none of these can
    if key == "stale_ratio":
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def table(rows: dict[str, dict]) -> str:
    head = "| variant | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for variant, row in rows.items():
        lines.append(
            f"| `{variant}` | "
            + " | ".join(_cell(key, row.get(key), row) for key, _ in COLUMNS)
            + " |"
        )
    return "\n".join(lines)


def _rounds_text(rounds: int, seconds: float) -> str:
    if rounds <= 1:
        return f"Each variant ran {seconds:g} s alone: "
    return (
        f"Each variant ran {seconds:g} s alone in each of {rounds} rounds (every round runs "
        "every variant; counts are summed over the rounds, max is the worst of any round, "
        "and the other figures are the mean of the rounds with its 95 % t-interval in "
        "brackets): "
    )


def render_markdown(meta: dict, rows: dict[str, dict]) -> str:
    edge = rows.get("edge")
    text = [
        "# Staleness per invalidation mode",
        "",
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Command**: `{meta['command']}`",
        "",
        _rounds_text(meta.get("rounds", 1), meta["duration_s"]) + f"{meta['writers']} writers, "
        f"{meta['readers']} readers on 20 items of its own; slow query "
        f"{meta['delay_s']:g} s, TTL {meta['ttl_s']} s, payload {meta['payload_bytes']} bytes. "
        "A read is stale when it started after a newer version had been confirmed to a "
        'writer; staleness is the time since then ("none": no read was stale). A '
        "read-your-writes violation is a writer's read of its own item, right after its "
        "write, that returned an older version. DB queries are PostgreSQL's own count "
        "(pg_stat_statements) of `slow_item()`.",
        "",
        table(rows),
        "",
    ]
    if edge:
        text += [
            f"`edge` is the edge tier (`CACHE_STRATEGY=edge`, write-through behind it): "
            f"Nginx serves its copy as fresh for at most `EDGE_CACHE_SECONDS` = "
            f"{meta['edge_seconds']} s (the app stamps its expiry on the whole second, "
            "Nginx's clock: the copy is fresh for the validity less up to 1 s), then that "
            "copy while one background request refreshes it. Nginx starts that refresh "
            "when a request asks for the copy past its expiry, and gives that request the "
            "old copy too, so a read may miss a write for up to the validity, plus the time "
            "until the key's next request after it expired, plus one refresh. It promises "
            "no read-your-writes: a writer's own read goes through the same copy.",
            "",
        ]
    text += ["![staleness per mode](staleness.png)", ""]
    return "\n".join(text)


def write_report(out: Path, meta: dict, rows: dict[str, dict]) -> None:
    (out / "staleness.json").write_text(
        json.dumps(clean({"meta": meta, "variants": rows}), indent=2, default=str)
    )
    (out / "staleness.md").write_text(render_markdown(meta, rows))
    charts.staleness_chart(out / "staleness.png", rows, meta.get("edge_seconds"))


def publish(out: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("staleness.md", "staleness.json", "staleness.png"):
        shutil.copy2(out / name, target / name)
