"""Issue 20: what the lab's metrics mean -- slow-query buckets, hit ratio with the edge."""

from __future__ import annotations

import random

import pytest

from cachelab import config, metrics
from loadtest import stats


def histogram_quantile(q: float, bounds: tuple[float, ...], samples: list[float]) -> float:
    """Prometheus' histogram_quantile(): the bucket holding rank q * n, then a
    linear interpolation inside it (from 0 for the first bucket)."""
    counts = [sum(1 for s in samples if s <= b) for b in bounds]
    rank = q * len(samples)
    for index, (bound, cumulative) in enumerate(zip(bounds, counts, strict=True)):
        if cumulative >= rank:
            lower = bounds[index - 1] if index else 0.0
            below = counts[index - 1] if index else 0
            inside = cumulative - below
            return lower + (bound - lower) * (rank - below) / inside
    raise AssertionError("rank beyond the last bucket")


@pytest.mark.parametrize("delay", [0.5, 1, 2, 10])
def test_slow_query_percentiles_from_the_buckets_are_within_half_a_percent(delay):
    """Queries take the delay plus a few ms: PromQL's p50/p95 from the buckets
    must match the true percentiles, not invent the 11.25 s / 12.4 s spread of
    one (10, 12.5] bucket."""
    rng = random.Random(delay)
    samples = [delay + 0.002 + rng.expovariate(1 / 0.004) for _ in range(2000)]
    bounds = metrics.slow_query_buckets(delay)
    for q in (0.5, 0.95, 0.99):
        true = stats.percentile(samples, q * 100)
        assert true is not None
        found = histogram_quantile(q, bounds, samples)
        assert abs(found - true) / true < 0.005, (delay, q, found, true)


def test_slow_query_buckets_keep_coarse_ones_and_need_no_delay():
    assert set(metrics.SLOW_QUERY_BASE_BUCKETS) <= set(metrics.slow_query_buckets(3.0))
    assert metrics.slow_query_buckets(None) == tuple(sorted(metrics.SLOW_QUERY_BASE_BUCKETS))
    buckets = metrics.slow_query_buckets(10)
    assert list(buckets) == sorted(set(buckets))


def test_the_strategy_list_is_one_list():
    assert metrics.STRATEGIES is config.STRATEGIES
    assert "edge" in config.STRATEGIES
    assert config.MEMORY_TIER_STRATEGIES == ("two-tier", "edge")


def test_hit_ratio_counts_the_answers_nginx_gave_from_its_cache():
    app = {"hit": 8.0, "miss": 2.0}
    assert metrics.hit_ratio(app) == pytest.approx(0.8)
    edge = {"hit": 70.0, "updating": 15.0, "stale": 3.0, "revalidated": 2.0, "miss": 10.0}
    served = metrics.edge_served(edge)
    assert served == 90.0  # the miss reached the app, and is among its lookups
    assert metrics.hit_ratio(app, served) == pytest.approx(98 / 100)
    assert metrics.hit_ratio({}, 0.0) is None
    assert metrics.hit_ratio({}, 5.0) == 1.0
