"""``python -m loadtest.bench compare A B``: two results folders side by side.

    python -m loadtest.bench compare docs/results results/aws-20270101T1200Z

For every benchmark both folders hold (capacity.json, hits.json,
summary.json of ``latency``, staleness.json) it prints one table with each
figure from A, from B and their ratio, and names what differed between where
they were measured (their ``where`` records: the kind of machine, region,
instance classes, TLS, the network between the app and its cache), with what
each difference does to the figures. ``--publish FILE`` writes it as Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import BenchError
from .numbers import ms, rate, ratio_text

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""
# What a difference in each part of `where` does to the figures.
EXPLAIN = {
    "kind": "a different kind of machine and network altogether",
    "region": "the region (prices and the distance to the load generator)",
    "app": "the app's instance class: CPU per request and its limit set the rates",
    "cache": "the cache's class or placement: every Redis round trip crosses it "
    "(in a VPC, an ElastiCache round trip is a network hop, not a local socket)",
    "db": "the database's class: the slow query and the connection budget",
    "tls": "TLS to the cache and database: a handshake per connection and encryption per request",
    "network": "the network between app, cache and database",
    "engine": "the cache engine and its version",
    "cpus": "the CPUs the whole stack shared",
    "machine": None,  # the summary line of the others
    "label": None,
    "host": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", type=Path, help="a results folder (e.g. docs/results)")
    parser.add_argument("second", type=Path, help="another results folder (e.g. an AWS run)")
    parser.add_argument("--publish", type=Path, default=None, help="also write the Markdown here")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _where(data: dict | None) -> dict:
    if not data:
        return {}
    meta = data.get("meta", {})
    return meta.get("where") or {"label": "local", "machine": meta.get("machine", "")}


def differences(a: dict, b: dict) -> list[str]:
    """What differed between two ``where`` records, each with what it does."""
    lines = []
    for key in sorted(set(a) | set(b)):
        if EXPLAIN.get(key, "") is None or a.get(key) == b.get(key):
            continue
        reason = EXPLAIN.get(key, "")
        lines.append(
            f"- **{key}**: {a.get(key, 'n/a')} vs {b.get(key, 'n/a')}"
            + (f" -- {reason}" if reason else "")
        )
    return lines


def _ratio(first: float | None, second: float | None) -> str:
    if not first or second is None:
        return "n/a"
    return ratio_text(second / first)


def capacity_rows(a: dict, b: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name in sorted(set(a["systems"]) | set(b["systems"])):
        sa = a["systems"].get(name, {}).get("summary", {})
        sb = b["systems"].get(name, {}).get("summary", {})
        rows.append(
            (
                name,
                f"highest rate with p99 ≤ {a['p99_target_ms']:g} ms",
                rate(sa.get("knee_rps")),
                rate(sb.get("knee_rps")),
                _ratio(sa.get("knee_rps"), sb.get("knee_rps")),
            )
        )
    return rows


def hits_rows(a: dict, b: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for mode in sorted(set(a["modes"]) & set(b["modes"])):
        ra, rb = a["modes"][mode]["rows"], b["modes"][mode]["rows"]
        for name in sorted(set(ra) | set(rb)):
            va = (ra.get(name) or {}).get("rps") or {}
            vb = (rb.get(name) or {}).get("rps") or {}
            rows.append(
                (
                    name,
                    f"{mode} req/s (closed loop)",
                    rate(va.get("mean")),
                    rate(vb.get("mean")),
                    _ratio(va.get("mean"), vb.get("mean")),
                )
            )
    return rows


def latency_rows(a: dict, b: dict) -> list[tuple[str, str, str, str, str]]:
    runs_a = {r["strategy"]: r for r in a["runs"]}
    runs_b = {r["strategy"]: r for r in b["runs"]}
    rows = []
    for name in sorted(set(runs_a) & set(runs_b)):
        for key, title, fmt in (
            ("rps", "req/s", rate),
            ("p50_ms", "p50 ms", ms),
            ("p99_ms", "p99 ms", ms),
        ):
            va, vb = runs_a[name].get(key), runs_b[name].get(key)
            rows.append((name, f"Locust {title}", fmt(va), fmt(vb), _ratio(va, vb)))
    return rows


def staleness_rows(a: dict, b: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name in sorted(set(a["variants"]) & set(b["variants"])):
        va, vb = a["variants"][name], b["variants"][name]
        rows.append(
            (
                name,
                "staleness p99 ms",
                ms(va.get("staleness_p99_ms")) if va.get("stale_reads") else "none",
                ms(vb.get("staleness_p99_ms")) if vb.get("stale_reads") else "none",
                "",
            )
        )
    return rows


BENCHMARKS = (
    ("capacity.json", "Throughput at the latency target (open loop)", capacity_rows),
    ("hits.json", "Hit throughput at saturation (closed loop)", hits_rows),
    ("summary.json", "The same Locust load per strategy", latency_rows),
    ("staleness.json", "Staleness per invalidation mode", staleness_rows),
)


def render(first: Path, second: Path) -> str:
    sections = []
    where_a: dict = {}
    where_b: dict = {}
    for filename, title, rows_of in BENCHMARKS:
        a, b = _load(first, filename), _load(second, filename)
        if not a or not b:
            continue
        where_a, where_b = _where(a), _where(b)
        label_a, label_b = where_a.get("label", str(first)), where_b.get("label", str(second))
        lines = [
            f"## {title}",
            "",
            f"| system | figure | {label_a} | {label_b} | {label_b} / {label_a} |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [f"| {' | '.join(row)} |" for row in rows_of(a, b)]
        sections.append("\n".join(lines))
    if not sections:
        raise BenchError(f"{first} and {second} hold no benchmark in common")
    head = [
        f"# {where_a.get('label', first)} and {where_b.get('label', second)}, side by side",
        "",
        f"- **{where_a.get('label', first)}**: {where_a.get('machine', '')}",
        f"- **{where_b.get('label', second)}**: {where_b.get('machine', '')}",
        "",
        "What differed between them:",
        "",
        *(differences(where_a or {}, where_b or {}) or ["- nothing recorded"]),
        "",
    ]
    return "\n".join(head + [s + "\n" for s in sections])


def run(args: argparse.Namespace) -> int:
    text = render(args.first, args.second)
    print(text, flush=True)
    if args.publish:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        args.publish.write_text(text)
    return 0
