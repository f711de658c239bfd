"""The report of ``python -m loadtest.bench capacity``: capacity.md, .json and the curve.

Re-render without a stack: ``python -m loadtest.capacityreport results/<run>``.

The **knee** of a system is the highest offered rate whose p99 (the mean of
its repeats) met the target with no error and no dropped request; the next
rate tried above it missed, so the true knee lies between the two, and the
report gives both (its spread). A ratio of two knees is given with the range
those brackets allow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import charts, reportfiles
from .numbers import interval_text, ms, rate, ratio_text

CHART = "capacity.png"
BASELINE = "flask-caching"


def _met(level: dict) -> bool:
    return level["verdict"] == "met"


def add_summary(data: dict) -> None:
    """Per system: closed-loop rate, knee, first miss, p99 at the knee and at half of it."""
    for system in data["systems"].values():
        ladder = sorted(
            (lv for lv in system["levels"] if lv["kind"] != "half-knee"), key=lambda lv: lv["rate"]
        )
        missed = [lv for lv in ladder if not _met(lv)]
        miss = missed[0] if missed else None
        met = [lv for lv in ladder if _met(lv) and (miss is None or lv["rate"] < miss["rate"])]
        knee = met[-1] if met else None
        half = next((lv for lv in system["levels"] if lv["kind"] == "half-knee"), None)
        system["summary"] = {
            "knee_rps": knee["rate"] if knee else None,
            "knee_p99_ms": knee["p99_ms"] if knee else None,
            "first_miss_rps": miss["rate"] if miss else None,
            "first_miss_verdict": miss["verdict"] if miss else None,
            "half_knee_rps": half["rate"] if half else None,
            "half_knee_p99_ms": half["p99_ms"] if half else None,
            "knee_of_closed": (
                knee["rate"] / system["closed_rps"] if knee and system.get("closed_rps") else None
            ),
        }
    base = data["systems"].get(BASELINE, {}).get("summary")
    for system in data["systems"].values():
        system["summary"]["x_flask_caching"] = knee_ratio(system["summary"], base)


def knee_ratio(ours: dict, base: dict | None) -> dict | None:
    """Our knee over the baseline's, with the range the knees' brackets allow."""
    if not base or not ours.get("knee_rps") or not base.get("knee_rps"):
        return None
    mid = ours["knee_rps"] / base["knee_rps"]
    low = ours["knee_rps"] / (base.get("first_miss_rps") or base["knee_rps"])
    high = (ours.get("first_miss_rps") or ours["knee_rps"]) / base["knee_rps"]
    return {"mean": mid, "low": low, "high": high}


def _knee(summary: dict) -> str:
    if summary["knee_rps"] is None:
        return "none met"
    text = rate(summary["knee_rps"])
    if summary["first_miss_rps"]:
        text += f" (< {rate(summary['first_miss_rps'])})"
    return text


def _limit(summary: dict) -> str:
    verdict = summary.get("first_miss_verdict")
    return {
        None: "not reached",
        "missed": "p99",
        "errors": "errors",
        "dropped": "dropped requests",
        "generator": "the load generator (k6 CPU-bound)",
    }.get(verdict, verdict or "")


def render_table(data: dict) -> str:
    target = data["p99_target_ms"]
    lines = [
        f"| system | highest rate with p99 ≤ {target:g} ms (next tried) | p99 there, ms "
        "| p99 at half that rate, ms | × Flask-Caching | closed-loop req/s (wrk) "
        "| knee / closed loop | stopped by |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for system in data["systems"].values():
        summary = system["summary"]
        ratio = summary.get("x_flask_caching")
        ratio_cell = (
            "n/a"
            if not ratio
            else f"{ratio_text(ratio['mean'])} ({ratio_text(ratio['low'])}–"
            f"{ratio_text(ratio['high'])})"
        )
        share = summary.get("knee_of_closed")
        lines.append(
            f"| {system['label']} | {_knee(summary)} | {interval_text(summary['knee_p99_ms'], ms)} "
            f"| {interval_text(summary['half_knee_p99_ms'], ms)} | {ratio_cell} "
            f"| {rate(system.get('closed_rps'))} "
            f"| {'n/a' if share is None else f'{share:.0%}'} | {_limit(summary)} |"
        )
    ceiling = data.get("cache_ceiling")
    if ceiling and ceiling.get("rps"):
        cell = ceiling["rps"]
        lines.append(
            f"| cache server's own ceiling ({ceiling['tool'].split(' ')[0]}, **closed loop**, "
            f"GET, 50 connections) | n/a (closed loop) "
            f"| {interval_text(ceiling.get('p99_ms'), ms)} | n/a "
            f"| n/a | {interval_text(cell)} "
            f"| n/a | the server's CPU |"
        )
    return "\n".join(lines)


def curve_table(data: dict) -> str:
    lines = [
        "| system | offered req/s | kind | achieved req/s | p50 ms | p99 ms (95 % CI) "
        "| p99.9 ms | errors | dropped | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, system in data["systems"].items():
        for level in sorted(system["levels"], key=lambda lv: lv["rate"]):
            achieved = level.get("achieved_rps")
            lines.append(
                f"| {name} | {rate(level['rate'])} | {level['kind']} "
                f"| {rate(achieved['mean']) if achieved else 'n/a'} "
                f"| {ms(level['p50_ms']['mean']) if level.get('p50_ms') else 'n/a'} "
                f"| {interval_text(level['p99_ms'], ms)} "
                f"| {ms(level['p999_ms']['mean']) if level.get('p999_ms') else 'n/a'} "
                f"| {level['errors']} | {level['dropped']} | {level['verdict']}"
                + (f" ({level['disturbed']} disturbed)" if level.get("disturbed") else "")
                + " |"
            )
    return "\n".join(lines)


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    target = data["p99_target_ms"]
    out = [
        f"# Throughput at a latency target: the highest rate with p99 ≤ {target:g} ms (open loop)",
        "",
        f"- **When**: {meta['started_utc']} (UTC)",
        f"- **Where**: {meta['machine']}",
        f"- **Machine load**: {meta.get('load_note', 'not recorded')}",
        f"- **Load**: {meta['generator']}: each step offers a fixed arrival rate for "
        f"{meta['step_s']:g} s, **{meta['repeats']} times**, the systems interleaved in a "
        "shuffled order; latency from the request asking for a connection to its last byte "
        "(every sample: exact percentiles to p99.9); a step that drops a request "
        "(no free virtual user) or gets an error fails",
    ]
    if meta.get("target"):
        out += [
            f"- **Ladder**: from {meta['start_rate']:g} req/s, x1.5 a step, then bisections "
            "between the last met and the first missed rate, then half the knee",
            f"- **Target**: {meta['target']}, measured as deployed (no reconfiguring; its own "
            "TTL, CPU and cache); the other systems' rows come from a local run "
            "(`python -m loadtest.bench compare`)",
        ]
    else:
        out += [
            f"- **Ladder**: fractions {', '.join(f'{f:g}' for f in meta['fractions'])} of each "
            f"system's closed-loop rate (wrk, {meta['connections']} connections, "
            f"{meta['probe_s']:g} s)"
            + (
                f"; a system that missed at its first rate steps down by thirds (up to "
                f"{meta['descents']} times) until one meets"
                if meta.get("descents")
                else ""
            )
            + "; then bisections between the last met and the first missed "
            "rate, then every system at half its knee",
            "- **Stack**: every app and Nginx with the lab's CPU limit (compose.yaml); "
            "Flask-Caching behind the same Nginx image and configuration (equal CPU on the same "
            f"path); one {meta['engine']} and one PostgreSQL; pure hits (TTL far above the run)"
            + (f"; `before` is the lab at `{meta['before']}`" if meta.get("before") else ""),
        ]
    out += [
        f"- **Command**: `{meta['command']}`",
        "",
        render_table(data),
        "",
        "Each p99 is the mean of the repeats ± the half-width of its 95 % confidence "
        "interval (Student t). The highest rate that met the target is followed by the next "
        "rate tried, which did not: the knee lies between them, and the ratio to "
        "Flask-Caching gives the range those brackets allow. *Closed-loop req/s* is wrk's "
        "saturated rate from the same run; *knee / closed loop* says how much of it an open "
        "loop can use within the target.",
        "",
        f"![throughput-latency curves]({CHART})",
        "",
        "## Every step",
        "",
        curve_table(data),
        "",
    ]
    return "\n".join(out)


def write_report(results_dir: Path, data: dict) -> dict[str, Path]:
    return reportfiles.write_report(
        results_dir, "capacity", data, render_markdown, charts.capacity_chart
    )


def publish(results_dir: Path, target: Path) -> None:
    reportfiles.publish(results_dir, "capacity", target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m loadtest.capacityreport results/<run>")
    folder = Path(sys.argv[1])
    found = json.loads((folder / "capacity.json").read_text())
    for name, path in write_report(folder, found).items():
        print(f"{name}: {path}")
