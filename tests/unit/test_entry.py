"""Entries: format, freshness from PTTL, jitter bounds, XFetch's early-refresh rate."""

from __future__ import annotations

import json
import math
import random

import pytest

from cachelab.engine.model import FORMAT, Entry, decode, jittered_ttl, tombstone, xfetch_due


def make(delta: float = 1.0, ttl: float = 10.0, grace: float = 60.0, **kw) -> Entry:
    return Entry(
        value={"version": "v"},
        fence=kw.pop("fence", 5),
        ttl=ttl,
        grace=grace,
        delta=delta,
        created=0.0,
        **kw,
    )


def test_round_trip_keeps_every_field():
    entry = make(version=3)
    assert decode(entry.encode()) == entry
    mark = tombstone(version=4, fence=9, created=1.5)
    assert decode(mark.encode()) == mark and mark.tombstone


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[1,2]",
        b'{"f":1,"value":{}}',  # the old v1 format
        b'{"f":2,"value":{},"fence":1,"ttl":1,"grace":0,"delta":0,"created":0}',  # v2
    ],
)
def test_old_or_corrupt_entries_read_as_a_miss(raw):
    assert decode(raw) is None


CURRENT = {"f": FORMAT, "value": {}, "fence": 1, "ttl": 1, "grace": 0, "delta": 0, "created": 0}


@pytest.mark.parametrize(
    "change",
    [
        {"value": "x"},
        {"fence": "x"},
        {"ttl": -1},
        {"grace": -1},
        {"ttl": None},
        {"kind": "other"},
        {"delta": None},
        {"created": "then"},
        {"version": "v3"},
    ],
)
def test_an_entry_of_this_format_with_a_bad_field_reads_as_a_miss(change):
    assert decode(json.dumps(CURRENT).encode()) is not None
    assert decode(json.dumps({**CURRENT, **change}).encode()) is None


@pytest.mark.parametrize("field", ["value", "fence", "ttl", "grace", "delta", "created"])
def test_an_entry_missing_a_field_reads_as_a_miss(field):
    document = {name: value for name, value in CURRENT.items() if name != field}
    assert decode(json.dumps(document).encode()) is None


def test_freshness_comes_from_pttl_not_from_clocks():
    entry = make(ttl=10, grace=60)
    assert entry.px == 70_000
    assert entry.soft_remaining(70_000) == pytest.approx(10)
    assert entry.soft_remaining(60_000) == pytest.approx(0)
    assert entry.soft_remaining(50_000) == pytest.approx(-10)  # stale for 10 s


def test_jitter_is_only_ever_shorter_and_within_the_ratio():
    rng = random.Random(1)
    values = [jittered_ttl(10, 0.2, rng) for _ in range(10_000)]
    assert min(values) >= 8.0 and max(values) <= 10.0
    assert max(values) - min(values) > 1.9  # it does spread over the whole range

    class Edge(random.Random):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def random(self):
            return self.value

    assert jittered_ttl(10, 0.2, Edge(0.0)) == 10
    assert jittered_ttl(10, 0.2, Edge(0.999999)) == pytest.approx(8.0, abs=1e-4)


@pytest.mark.parametrize(
    "left, beta, delta", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, 2.0, 0.5), (3.0, 2.0, 2.0)]
)
def test_xfetch_early_refresh_rate_matches_the_paper(left, beta, delta):
    """P(refresh now | t seconds left) = exp(-t / (beta * delta)) (Vattani et al.)."""
    rng = random.Random(42)
    entry = make(delta=delta, ttl=100.0)  # the ttl/2 cap stays out of the way
    draws = 20_000
    due = sum(xfetch_due(entry, left, beta, rng) for _ in range(draws))
    expected = math.exp(-left / (beta * delta))
    sigma = math.sqrt(draws * expected * (1 - expected))
    assert abs(due - draws * expected) <= 5 * sigma, (due, draws * expected)


def test_xfetch_lead_is_capped_at_half_the_ttl_and_off_when_stale_or_disabled():
    rng = random.Random(3)
    entry = make(delta=100.0, ttl=10.0)  # a huge delta would always refresh
    assert not any(xfetch_due(entry, 5.1, 1.0, rng) for _ in range(2000))
    assert any(xfetch_due(entry, 4.9, 1.0, rng) for _ in range(2000))
    assert not xfetch_due(entry, -1.0, 1.0, rng)  # stale: the stale path refreshes
    assert not xfetch_due(entry, 0.001, 0.0, rng)  # XFETCH_BETA=0 turns it off
