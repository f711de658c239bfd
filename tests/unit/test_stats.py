"""Issue 20: the one percentile definition and the interval of repeated figures."""

from __future__ import annotations

import random
import statistics
from fractions import Fraction

import numpy as np
import pytest

from loadtest import stats


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 99, 100, 101, 1000, 1001])
def test_percentile_is_numpys_inverted_cdf(n):
    """numpy's method="inverted_cdf", except where q * n / 100 is a whole number
    that floating point puts a hair above (0.07 * 100 = 7.000000000000001):
    numpy then takes the next sample, the definition takes that rank."""
    rng = random.Random(n)
    values = [rng.lognormvariate(0, 2) for _ in range(n)]
    ordered = sorted(values)
    for q in (0, 0.1, 1, 7, 25, 50, 66.6, 90, 95, 99, 99.9, 99.99, 100):
        exact = Fraction(str(q)) * n / 100
        if exact.denominator == 1 and exact > 0:
            assert stats.percentile(values, q) == ordered[int(exact) - 1], (n, q)
        else:
            expected = float(np.percentile(values, q, method="inverted_cdf"))
            assert stats.percentile(values, q) == expected, (n, q)


def test_percentile_at_exact_ranks_takes_the_lower_sample():
    """The off-by-one the two old definitions disagreed on: at q * n / 100 an
    integer, the rank is that integer (p50 of 1..10 is 5, not 6)."""
    values = list(range(1, 11))
    assert stats.percentile(values, 50) == 5 == np.percentile(values, 50, method="inverted_cdf")
    assert stats.percentile(list(range(1, 101)), 99) == 99
    assert stats.percentile(list(range(1, 101)), 7) == 7  # 0.07 * 100 is 7.000000000000001


def test_percentile_edges():
    assert stats.percentile([], 50) is None
    assert stats.percentile([3.0], 99.9) == 3.0
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_every_percentile_in_the_package_is_the_one_definition():
    from loadtest import ledger, traffic

    values = [5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0, 8.0, 6.0, 10.0]
    hits = traffic.Hits(
        traffic.Hit(0.0, v, 200, "HIT", "/", "", {}) for v in values
    )  # Hits.latency: seconds
    for q in (50, 90, 99):
        assert hits.latency(q) == stats.percentile(values, q)
    record = ledger.VariantStats(staleness_s=[v / 1000 for v in values])
    assert ledger.summarize(record)["staleness_p50_ms"] == 5.0


def test_interval_matches_the_t_interval_and_covers_95_percent():
    data = [10.0, 12.0, 11.0, 13.0, 9.0]
    found = stats.interval(data)
    assert found is not None and found.n == 5
    half = 2.776 * statistics.stdev(data) / 5**0.5
    assert found.mean == pytest.approx(11.0)
    assert (found.low, found.high) == pytest.approx((11.0 - half, 11.0 + half))
    # Coverage: the interval of 4 draws holds the true mean about 95 % of the time.
    rng = random.Random(7)
    trials = 4000
    covered = 0
    for _ in range(trials):
        got = stats.interval([rng.gauss(100, 15) for _ in range(4)])
        assert got is not None
        covered += got.low <= 100 <= got.high
    assert 0.93 <= covered / trials <= 0.97


def test_interval_of_one_value_or_none():
    one = stats.interval([4.0])
    assert one is not None and (one.low, one.mean, one.high, one.n) == (4.0, 4.0, 4.0, 1)
    assert stats.interval([]) is None
    assert stats.interval([float("nan")]) is None


def test_a_ratio_interval_is_geometric_and_never_below_zero():
    # Two rounds (t = 12.7) of a ratio that doubled between them: the
    # arithmetic interval reached below 0; on the logarithms it cannot.
    data = [0.5, 2.0]
    assert stats.interval(data).low < 0  # type: ignore[union-attr]
    found = stats.ratio_interval(data)
    assert found is not None and found.n == 2
    assert found.mean == pytest.approx(1.0)
    assert 0 < found.low < 0.5 and found.high > 2.0
    # As wide for 2x as for 0.5x: the bounds are reciprocal around 1.
    assert found.low * found.high == pytest.approx(1.0)
    one = stats.ratio_interval([3.0])
    assert one is not None and (one.low, one.mean, one.high) == (3.0, 3.0, 3.0)
    assert stats.ratio_interval([]) is None
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_interval([1.0, 0.0])


def test_per_second_counts_completions_and_zero_seconds():
    """A stall is a second with zero completions, shown at once (not a frozen
    moving average that shows it late)."""
    start = 100.0
    completions = [100.1, 100.5, 100.9, 103.2, 103.3, 104.99, 99.0, 105.0]
    assert stats.per_second(completions, start, 105.0) == [3, 0, 0, 2, 1]
