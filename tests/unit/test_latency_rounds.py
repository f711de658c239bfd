"""The latency benchmark over rounds (``bench latency --rounds N``): each strategy's
figures as the mean of its rounds with a 95 % interval, counts summed, ratios paired
by round; single runs unchanged."""

from __future__ import annotations

import json
import math

import pytest

from loadtest import latencyreport, readme
from loadtest.latencyreport import RunResult

pytestmark = pytest.mark.unit


def run(strategy: str, p50: float, rps: float, hits: float, misses: float, slow: int) -> RunResult:
    return RunResult(
        strategy=strategy,
        directory=strategy,
        requests=int(rps * 10),
        failures=1,
        rps=rps,
        p50_ms=p50,
        p95_ms=p50 * 2,
        p99_ms=p50 * 3,
        max_ms=p50 * 10,
        avg_ms=p50,
        slow_calls=slow,
        duration_s=10.0,
        cache_results={"hit": hits, "miss": misses},
        failure_reasons={"503": 1},
    )


def test_rounds_give_means_with_intervals_and_sum_the_counts():
    rounds = [
        run("two-tier", p50, rps, 90, 10, 1) for p50, rps in ((2.0, 100), (3.0, 110), (4.0, 120))
    ]
    rounds[2].cache_results = {"hit": 70, "miss": 30}
    row = latencyreport.combine_rounds(rounds)
    assert (row.requests, row.failures, row.slow_calls, row.duration_s) == (3300, 3, 3, 30.0)
    assert row.failure_reasons == {"503": 3} and row.max_ms == 40.0  # the worst round
    # mean 3 of (2, 3, 4), s = 1: 3 ± t(2) / sqrt(3)
    assert row.p50_ms == 3.0 and row.spread["p50_ms"]["n"] == 3
    assert math.isclose(row.spread["p50_ms"]["high"] - 3.0, 4.303 / math.sqrt(3), rel_tol=1e-3)
    assert row.rps == 110.0 and row.p99_ms == 9.0
    # The hit ratio over every round's lookups (250 of 300), its interval from the rounds'.
    assert row.hit_ratio == pytest.approx(250 / 300)
    assert row.spread["hit_ratio"]["n"] == 3 and row.queries_per_second == pytest.approx(0.1)
    assert len(row.rounds) == 3 and "spread" not in row.rounds[0]
    table = latencyreport.summary_table([row])
    assert "| 110.0 (85.2–134.8) | 3.0 (0.5–5.5) |" in table, table
    assert "| 83.3% (54.6%–100.0%) |" in table, "a ratio's interval is cut at 100 %"
    assert "| 0.10 |" in table, "no interval where the rounds agree to the figure's precision"
    single = run("two-tier", 2.0, 100, 90, 10, 1)
    assert latencyreport.combine_rounds([single]) is single
    assert "(" not in latencyreport.summary_table([single])


def test_the_speed_up_is_paired_by_round_and_given_with_its_interval(tmp_path):
    """Round i of the baseline against round i of the strategy: a slow round of the
    machine slows both, and the ratio of the pair stays."""
    none = latencyreport.combine_rounds([run("none", p, 1, 0, 10, 10) for p in (10_000, 20_000)])
    cached = latencyreport.combine_rounds([run("two-tier", p, 100, 90, 10, 1) for p in (1.0, 2.0)])
    found = latencyreport.p50_ratio_intervals([none, cached])["two-tier"]
    assert found.n == 2 and found.mean == pytest.approx(10_000) and found.low == found.high
    mixed = latencyreport.combine_rounds([run("swr", p, 100, 90, 10, 1) for p in (2.0, 1.0)])
    spread = latencyreport.p50_ratio_intervals([none, mixed])["swr"]
    assert spread.low < spread.mean < spread.high and spread.mean == pytest.approx(10_000)
    meta = {
        "started_utc": "2026-12-05 10:00",
        "machine": "test",
        "locust_version": "2",
        "scenario": "hot",
        "user_classes": ["HotKeyUser"],
        "users": 20,
        "spawn_rate": "20",
        "duration_s": 10.0,
        "rounds": 2,
        "wait_min": 0.1,
        "wait_max": 0.5,
        "host": "http://127.0.0.1",
        "delay_s": 10.0,
        "ttl": "10 s",
        "app_containers": 1,
        "command": "python -m loadtest.bench latency --rounds 2",
    }
    markdown = latencyreport.render_markdown(meta, [none, mixed], links=False)
    assert "in each of 2 rounds" in markdown and "(95 % CI " in markdown
    assert "geometric mean of the rounds' own ratios" in markdown
    folder = tmp_path / "results"
    folder.mkdir()
    data = {
        "meta": meta,
        "runs": [r.to_dict() for r in (none, mixed)],
        "p50_ratio_vs_none": latencyreport.p50_ratios([none, mixed]),
    }
    (folder / "summary.json").write_text(json.dumps(data, default=str))
    block = readme.latency_block(folder)
    assert "Means of 2 rounds" in block and " ± " in block
    assert "| 0.0% |" in block, "no interval where every round gave the same ratio"
    assert json.loads((folder / "summary.json").read_text())["meta"]["rounds"] == 2
