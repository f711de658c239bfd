"""Issue 20: what the reports compute and what the charts draw, from synthetic runs."""

from __future__ import annotations

import argparse
import json
import math
from random import Random
from typing import Any

import pytest

from loadtest import (
    capacityreport,
    charts,
    compare,
    hitbench,
    hitreport,
    ladder,
    locustcsv,
    numbers,
    reportfiles,
    stalenessreport,
    sweep,
    sweepreport,
    target,
)
from loadtest.errors import BenchError


# -- requests per second: completions per second, a stall shows as zeros at once -----
def test_requests_per_second_counts_completions_and_shows_a_stall_at_once():
    """Locust's current_rps stayed frozen at ~49/s through a stampede and showed it
    10 s late; completions per second show nothing completing while it lasts."""
    origin = 1000.0
    steady = [locustcsv.Request(origin + t / 10, 5.0, False) for t in range(0, 30)]  # 0-3 s
    stalled = [locustcsv.Request(origin + 3.0 + t / 100, 10_000.0, False) for t in range(50)]
    after = [locustcsv.Request(origin + 13.2 + t / 10, 5.0, False) for t in range(10)]
    series = locustcsv.completions_per_second(steady + stalled + after, origin)
    assert series[:3] == [10, 10, 10]
    assert series[3:13] == [0] * 10  # the stall: nothing completed, drawn at once
    assert sum(series[13:]) == 60  # the 50 stalled requests complete, then the rest


def test_latency_over_time_draws_each_request_when_it_was_sent():
    origin = 0.0
    requests = [locustcsv.Request(0.5, 4.0, False), locustcsv.Request(1.2, 10_000.0, False)]
    found = locustcsv.percentiles_by_start(requests, origin)
    assert [second for second, _ in found] == [0.0, 1.0]
    assert found[1][1][99] == 10_000.0  # the slow request shows where it began


# -- dot plots on log axes, "none" drawn as none ---------------------------------------
def test_dot_plot_draws_dots_not_bars_and_marks_none():
    plt = charts.pyplot()
    fig, ax = plt.subplots()
    charts.dot_plot(
        ax,
        ["ttl", "delete"],
        {"p99": [9800.0, None]},
        log=True,
        fmt=lambda v: f"{v:.0f}",
    )
    assert not ax.patches  # no bars
    points = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(points) == 1 and list(points[0].get_ydata()) == [9800.0]
    texts = [t.get_text() for t in ax.texts]
    assert "none" in texts and "0.0" not in texts  # no stale read is none, not 0 ms
    assert ax.get_yscale() == "log"
    plt.close(fig)


def test_staleness_chart_has_no_bar_and_says_none(tmp_path):
    rows: dict[str, dict] = {
        "ttl": {"stale_ratio": 0.97, "staleness_p99_ms": 9800.0, "db_queries_per_s": 2.6},
        "delete": {
            "stale_ratio": 0.0,
            "stale_reads": 0,
            "staleness_p99_ms": None,
            "db_queries_per_s": 3.3,
        },
    }
    path = charts.staleness_chart(tmp_path / "s.png", rows, 1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_staleness_rounds_sum_counts_keep_the_worst_and_give_each_mean_its_interval(tmp_path):
    """A single staleness run carried no spread (issue 20); rounds give each figure
    the mean of the rounds and its 95 % t-interval, and a round without a stale
    read gives no staleness figure (left out, not counted as 0)."""

    def round_(stale, p99, worst, qps):
        return {
            "reads": 100,
            "stale_reads": stale,
            "stale_ratio": stale / 100,
            "staleness_p50_ms": None if not stale else p99 / 2,
            "staleness_p99_ms": None if not stale else p99,
            "staleness_max_ms": None if not stale else worst,
            "own_reads": 10,
            "ryw_violations": 1,
            "db_queries_per_s": qps,
            "load": {"steps": 1},
        }

    row = stalenessreport.combine_rounds(
        [round_(20, 1100.0, 2500.0, 4.0), round_(10, 900.0, 1000.0, 2.0), round_(0, 0, 0, 3.0)]
    )
    assert (row["reads"], row["stale_reads"], row["own_reads"], row["ryw_violations"]) == (
        300,
        30,
        30,
        3,
    )
    assert row["staleness_max_ms"] == 2500.0  # the worst of any round
    assert row["staleness_p99_ms"] == 1000.0 and row["spread"]["staleness_p99_ms"]["n"] == 2
    # mean 3 of (2, 3, 4), s = 1: 3 ± 4.303 * 1 / sqrt(3)
    qps = row["spread"]["db_queries_per_s"]
    assert qps["mean"] == 3.0 and qps["n"] == 3
    assert math.isclose(qps["high"] - 3.0, 4.303 / math.sqrt(3), rel_tol=1e-3)
    assert "load" not in row and len(row["rounds"]) == 3
    table = stalenessreport.table({"ttl": row})
    assert "1,000.0 (" in table and "of 30" in table
    assert "(0.00%–" in table, "an interval's low end below 0 is shown cut at 0"
    single = stalenessreport.combine_rounds([round_(10, 900.0, 1000.0, 2.0)])
    assert single["spread"] == {} and "(" not in stalenessreport.table({"ttl": single})
    path = charts.staleness_chart(tmp_path / "s.png", {"ttl": row, "one": single}, 1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_carry_no_false_precision():
    assert numbers.ratio_text(10_000 / 3) == "3,300×"
    assert numbers.ratio_text(1.2941) == "1.3×"
    assert numbers.ratio_text(None) == "n/a"
    assert numbers.rate(2279.4) == "2,280" and numbers.rate(54.56) == "54.6"
    assert numbers.plus_minus(2279.4, 61.2) == "2,280 ± 61.2"
    # No latency or rate below 0: such an interval is shown cut at 0.
    assert numbers.plus_minus(10.0, 11.0, numbers.ms) == "10 (0–21)"


# -- capacity: verdicts, the knee and its bracket --------------------------------------
def step(rate, p99, errors=0, dropped=0, generator=0.2):
    return {
        "rate": rate,
        "duration_s": 10,
        "p99_ms": p99,
        "p50_ms": p99 / 3,
        "p999_ms": p99 * 2,
        "achieved_rps": rate,
        "max_ms": p99 * 3,
        "errors": errors,
        "dropped": dropped,
        "generator_cores": generator,
        "load": {"disturbed": False},
    }


def level(rate, *p99s, **kw):
    found = ladder.Level("two-tier", rate, "ladder")
    found.steps = [step(rate, p, **kw) for p in p99s]
    return found


def test_a_level_meets_the_target_on_the_mean_of_its_repeats():
    assert level(100, 10, 20, 30).verdict(25) == "met"  # mean 20
    assert level(100, 20, 30, 40).verdict(25) == "missed"
    assert level(100, 5, 5, errors=1).verdict(25) == "errors"
    assert level(1000, 5, dropped=50).verdict(25) == "dropped"  # 0.5 % of 10,000
    assert level(1000, 5, dropped=5).verdict(25) == "met"  # within the 0.1 % tolerance
    assert level(1000, 5, dropped=50, generator=0.95).verdict(25) == "generator"


def test_knee_is_the_highest_level_met_below_the_first_missed():
    levels = [level(100, 5), level(200, 8), level(300, 40), level(250, 20)]
    levels[3].kind = "refine"
    low, high = ladder.bracket(levels, 25)
    assert low is not None and high is not None
    assert (low.rate, high.rate) == (250, 300)
    # A met level above a missed one (noise) is not the knee: the first miss bounds it.
    noisy = [level(100, 5), level(200, 40), level(300, 10)]
    assert [lv.rate for lv in ladder.bracket(noisy, 25) if lv] == [100, 200]


class SteppedSystem:
    """A system (and k6 beside it) that holds p99 5 ms up to ``limit`` req/s, and drops
    requests above it: what the static page looked like from a ladder starting at a
    tenth of its closed-loop rate."""

    def __init__(self, limit):
        self.limit, self.rates = limit, []

    def step(self, system, rate, seconds):
        self.rates.append(rate)
        if rate <= self.limit:
            return step(rate, 5)
        return step(rate, 80, dropped=int(rate * seconds * 0.1))


def test_a_system_that_misses_at_its_first_rate_steps_down_until_one_meets():
    runner = SteppedSystem(limit=1000)
    args = argparse.Namespace(p99_ms=25, repeats=1, step=10, refine=2, descents=3)
    found = ladder.climb(runner, ["ceiling"], {"ceiling": [3420, 6840]}, args, Random(1))
    levels = found["ceiling"]
    # 3420 missed; 1140 missed; 380 met; then the bisections 760 and 950, and half of 950
    assert runner.rates == [3420, 1140, 380, 760, 950, 475]
    assert [lv.kind for lv in levels] == [
        "ladder",
        "descend",
        "descend",
        "refine",
        "refine",
        "half-knee",
    ]
    knee = ladder.knee_of(levels, 25)
    assert knee is not None and knee.rate == 950
    # a system that met at its first rate never descends; nor below 10 req/s
    runner = SteppedSystem(limit=10_000)
    ladder.climb(runner, ["edge"], {"edge": [3420]}, args, Random(1))
    assert runner.rates == [3420, 1710]  # the ladder, then half its knee
    runner = SteppedSystem(limit=1)
    assert ladder.climb(runner, ["slow"], {"slow": [60]}, args, Random(1))["slow"]
    assert runner.rates == [60, 20]  # 20 missed; 7 would be below MIN_RATE


def test_capacity_summary_gives_the_knee_its_bracket_and_the_ratio_its_range():
    def system(label, closed, levels):
        return {
            "label": label,
            "closed_rps": closed,
            "levels": [lv.to_dict(25) for lv in levels],
        }

    half = level(150, 6)
    half.kind = "half-knee"
    data: dict = {
        "p99_target_ms": 25,
        "systems": {
            "two-tier": system("two-tier", 2000, [level(300, 9), level(600, 30), half]),
            "flask-caching": system("fc", 1000, [level(100, 9), level(200, 30)]),
        },
    }
    capacityreport.add_summary(data)
    two = data["systems"]["two-tier"]["summary"]
    assert (two["knee_rps"], two["first_miss_rps"], two["half_knee_rps"]) == (300, 600, 150)
    assert two["knee_of_closed"] == pytest.approx(0.15)
    assert two["x_flask_caching"] == {"mean": 3.0, "low": 1.5, "high": 6.0}
    table = capacityreport.render_table(data)
    assert "| two-tier | 300 (< 600) |" in table and "3× (1.5×–6×)" in table


# -- hits: each figure with its interval, ratios from paired rounds --------------------
def sample(system, round_, rps, cpu=0.5):
    return hitbench.Sample(
        system=system,
        mode="pure-hit",
        round=round_,
        requests=int(rps * 10),
        seconds=10,
        rps=rps,
        p50_ms=3,
        p99_ms=20,
        max_ms=50,
        errors=0,
        cpu_s_per_1k=cpu,
        redis_cpu_s_per_1k=0.01,
        throttled=0.1,
    )


def test_hits_ratios_are_paired_by_round():
    base = [sample("flask-caching", r, rps) for r, rps in ((1, 1000), (2, 500), (3, 1000))]
    ours = [sample("two-tier", r, rps) for r, rps in ((1, 2000), (2, 1000), (3, 2000))]
    row = hitreport.summarize(ours, base, [])
    # Round 2 was slow for both (noise on the machine): the paired ratio is 2 every time.
    assert row["x_flask_caching"]["mean"] == pytest.approx(2.0)
    assert row["x_flask_caching"]["high"] - row["x_flask_caching"]["low"] == pytest.approx(0)
    assert row["rps"]["n"] == 3 and row["rps"]["low"] < row["rps"]["mean"] < row["rps"]["high"]


def test_hits_ratios_of_two_noisy_rounds_stay_above_zero():
    base = [sample("flask-caching", r, 1000) for r in (1, 2)]
    ours = [sample("two-tier", r, rps) for r, rps in ((1, 500), (2, 2000))]
    ratio = hitreport.summarize(ours, base, [])["x_flask_caching"]
    assert ratio["n"] == 2 and ratio["mean"] == pytest.approx(1.0)
    assert 0 < ratio["low"] < 0.5 < 2.0 < ratio["high"]
    # A round in which the system served nothing: the plain mean, its 0 kept.
    stalled = [sample("two-tier", 1, 0), sample("two-tier", 2, 2000)]
    assert hitreport.summarize(stalled, base, [])["x_flask_caching"]["low"] <= 0


# -- --target: where it ran, and comparing two places -----------------------------------
def test_where_a_target_runs():
    local = target.where_of("http://127.0.0.1:8080", [])
    assert local["kind"] == "local" and local["tls"] == "off"
    aws = target.where_of(
        "https://lab.example.com", ["kind=aws", "region=eu-west-1", "app=t3.small", "tls=on"]
    )
    assert aws["label"] == "aws eu-west-1" and aws["app"] == "t3.small"
    with pytest.raises(BenchError):
        target.where_of("http://x", ["region"])


def test_compare_names_what_differed():
    local = target.where_of("http://127.0.0.1:8080", [])
    aws = target.where_of(
        "https://lab.example.com",
        ["kind=aws", "region=eu-west-1", "app=t3.small", "cache=cache.t4g.micro", "tls=on"],
    )
    lines = compare.differences(local, aws)
    text = "\n".join(lines)
    assert "**tls**: off vs on" in text and "round trip" in text
    assert "**app**" in text and "**region**" in text


def test_compare_puts_two_capacity_runs_side_by_side(tmp_path):
    def run(folder, knee, where):
        folder.mkdir()
        (folder / "capacity.json").write_text(
            __import__("json").dumps(
                {
                    "p99_target_ms": 25,
                    "meta": {"where": where},
                    "systems": {"two-tier": {"summary": {"knee_rps": knee}}},
                }
            )
        )

    run(tmp_path / "a", 1000, target.where_of("http://127.0.0.1:1", []))
    run(
        tmp_path / "b",
        500,
        target.where_of("https://x.example", ["kind=aws", "region=us-east-1"]),
    )
    text = compare.render(tmp_path / "a", tmp_path / "b")
    assert "| two-tier | highest rate with p99 ≤ 25 ms | 1,000 | 500 | 0.5× |" in text
    assert "**kind**: local vs aws" in text


# -- sweep: both sweeps' cells, each once -----------------------------------------------
def test_sweep_cells_cover_both_sweeps_once_grouped_by_settings():
    found = sweep.cells(["uniform", "1.2"], [10, 100], [256, 4096])
    keys = [(c.skew, c.tier1, c.payload) for c in found]
    assert len(keys) == len(set(keys)) == 6
    shared = next(c for c in found if (c.tier1, c.payload) == (100, 256))
    assert shared.sweeps == ("payload", "tier1")
    settings = [(c.tier1, c.payload) for c in found]
    assert settings == sorted(settings, key=lambda s: (s[1], s[0]))  # fewest reconfigurations
    with pytest.raises(argparse.ArgumentTypeError):
        sweep.skew_list("steep")


def test_each_sweep_batch_spans_whole_ttl_cycles_after_a_warm_up_of_one():
    """The published sweep ran 10 s of warm-up and three 10 s batches with a 30 s
    TTL: only the third batch saw the first expiries, so the batch means were not
    of one steady run. The TTL now defaults to the batch's length, and a TTL the
    batches do not span whole is refused."""
    assert sweep.steady_ttl(None, warmup=10.0, duration=10.0) == 10
    assert sweep.steady_ttl(None, warmup=2.0, duration=2.0) == 2  # the CI profile
    assert sweep.steady_ttl(5, warmup=5.0, duration=20.0) == 5
    for ttl, warmup, duration in ((30, 10.0, 10.0), (4, 10.0, 10.0), (10, 5.0, 10.0)):
        with pytest.raises(BenchError, match="whole TTL cycles"):
            sweep.steady_ttl(ttl, warmup=warmup, duration=duration)
    with pytest.raises(BenchError, match="--ttl 2 with --warmup 2s and --duration 2.5s"):
        sweep.steady_ttl(None, warmup=2.0, duration=2.5)


class KeyReadingK6:
    """Stands in for k6run: reads keys the way openloop.js picks them ("each":
    iteration i reads rank i mod KEYS; otherwise uniform draws from the seed)."""

    def __init__(self) -> None:
        self.read: set[int] = set()
        self.runs: list[dict] = []

    def run(self, url: str, rate: float, seconds: float, **settings: Any) -> Any:
        self.runs.append({"rate": rate, "seconds": seconds, **settings})
        keys, first = settings["keys"], settings["first_item"]
        draw = Random(settings.get("seed", 1))
        for i in range(round(rate) * math.ceil(seconds)):
            rank = i % keys if settings["skew"] == "each" else draw.randrange(keys)
            self.read.add(first + rank)
        return argparse.Namespace(errors=0, dropped=0, to_dict=lambda: {"rate": rate})


@pytest.mark.parametrize(("keys", "rate"), [(1000, 200.0), (300, 80.0), (7, 3.0)])
def test_a_sweep_cell_reads_every_key_before_its_batches(keys, rate):
    """With only a warm-up of random reads (10 s at 200 req/s reaches about 86 % of
    1,000 keys), the batches saw the rest of the first reads: the database's share
    fell 6 %, 1 %, 0 % across one cell. Priming reads each key once first."""
    settings = dict(keys=keys, skew="uniform", lab_path="/api/items/{item}", first_item=1)
    args = argparse.Namespace(prime=True, warmup=10.0, keys=keys, rate=rate)
    k6 = KeyReadingK6()
    prime = sweep.warm_cell(k6, "http://lab", settings, args)
    assert k6.read == set(range(1, keys + 1))
    assert prime == {"rate": rate}
    assert k6.runs[0]["skew"] == "each" and k6.runs[1]["skew"] == "uniform"
    assert k6.runs[0]["seconds"] == sweep.prime_seconds(keys, rate) <= keys / rate + 1
    assert k6.runs[0]["vus"] >= rate  # first reads wait for the query: no drops
    unprimed = KeyReadingK6()
    assert (
        sweep.warm_cell(
            unprimed,
            "http://lab",
            settings,
            argparse.Namespace(prime=False, warmup=10.0, keys=keys, rate=rate),
        )
        is None
    )
    assert len(unprimed.runs) == 1


def test_the_sweep_report_says_where_priming_left_keys_unread():
    primed = {"prime": {"errors": 0, "dropped": 0}}
    short = {"prime": {"errors": 0, "dropped": 3}}
    assert sweepreport._priming_text([primed, primed]) == "each key read once, "
    assert "in 1 of 2 cells" in sweepreport._priming_text([primed, short])


def test_a_sweep_cell_is_the_mean_of_its_batches_with_their_interval(tmp_path):
    """The sweep's cells were single figures without spread (issue 20): each is now
    the mean of back-to-back batches (batch means) with its 95 % t-interval."""

    def batch(memory, hit, qps, p99, errors=0):
        return {
            "lookups": 100.0,
            "tier_share": {
                "memory": memory,
                "redis": hit - memory,
                "database": 1 - hit,
                "local": 0.0,
                "none": None,
            },
            "hit_ratio": hit,
            "db_queries": qps * 10,
            "db_queries_per_s": qps,
            "step": {"p99_ms": p99, "p999_ms": p99 * 2, "errors": errors, "dropped": 1},
        }

    cell = sweep.combine_batches(
        [
            batch(0.4, 0.8, 2.0, 30.0),
            batch(0.5, 0.9, 4.0, 50.0, errors=2),
            batch(0.6, 0.85, 3.0, 40.0),
        ]
    )
    assert cell["lookups"] == 300 and cell["db_queries"] == 90
    assert cell["step"]["errors"] == 2 and cell["step"]["dropped"] == 3
    assert math.isclose(cell["tier_share"]["memory"], 0.5) and cell["tier_share"]["none"] is None
    assert math.isclose(cell["step"]["p99_ms"], 40.0) and math.isclose(cell["hit_ratio"], 0.85)
    # (2, 3, 4): mean 3, s 1, n 3 -> 3 ± 4.303 / sqrt(3)
    spread = cell["spread"]["db_queries_per_s"]
    assert spread["n"] == 3 and math.isclose(spread["high"], 3 + 4.303 / math.sqrt(3), rel_tol=1e-3)
    assert "share_none" not in cell["spread"] and len(cell["batches"]) == 3
    data: dict[str, Any] = {
        "meta": {
            "started_utc": "2026-12-05 09:00",
            "machine": "test",
            "rate": 80.0,
            "keys": 300,
            "warmup_s": 2.0,
            "duration_s": 2.0,
            "batches": 3,
            "delay_s": 0.05,
            "ttl_s": 30,
            "command": "python -m loadtest.bench sweep",
        },
        "cells": [
            {
                "skew": "uniform",
                "tier1": 10,
                "payload": 256,
                "sweeps": ["tier1"],
                "load": {},
                **cell,
            }
        ],
    }
    table = sweepreport.table(data, "tier1")
    assert "50.0 % ± " in table and "3.0 ± " in table and "40 ± " in table
    assert "batch means" in sweepreport.render_markdown(data)
    single = sweep.combine_batches([batch(0.4, 0.8, 2.0, 30.0)])
    assert single["spread"] == {}
    assert "±" not in sweepreport.table(
        {**data, "cells": [{**data["cells"][0], **single}]}, "tier1"
    )
    # Error bars cut at 0 (no negative rate) and at 100 % (no share above it).
    assert charts._bar(3.0, {"low": -1.0, "high": 5.0}, 1, math.inf) == (3.0, 2.0)
    assert charts._bar(90.0, {"low": 0.8, "high": 1.2}, 100, 100.0) == (10.0, 10.0)
    path = charts.miss_ratio_chart(tmp_path / "sweep.png", data)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- report files: figures, tables and chart, written and published together -------
def test_a_report_is_its_three_files_written_then_published_together(tmp_path):
    run, docs = tmp_path / "run", tmp_path / "docs" / "results"
    run.mkdir()
    files = reportfiles.write_report(
        run,
        "demo",
        {"p99_ms": math.nan, "rates": [1.0, math.nan]},
        lambda data: f"# demo: {len(data['rates'])} rates\n",
        lambda path, data: path.write_bytes(b"chart"),
    )
    assert {name: path.name for name, path in files.items()} == {
        "json": "demo.json",
        "markdown": "demo.md",
        "chart": "demo.png",
    }
    assert json.loads(files["json"].read_text()) == {"p99_ms": None, "rates": [1.0, None]}
    reportfiles.publish(run, "demo", docs)
    assert sorted(p.name for p in docs.iterdir()) == ["demo.json", "demo.md", "demo.png"]
    assert (docs / "demo.md").read_text() == "# demo: 2 rates\n"
    assert (docs / "demo.png").read_bytes() == b"chart"
