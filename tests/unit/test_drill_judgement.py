"""The drills' stampede check (loadtest/drills.py ``stampedes``), on made-up
histories: one query per key while its lease lives, one more per read a worker
answered from the database because Redis was unavailable to it."""

from __future__ import annotations

import pytest

from loadtest.drills import Op, stampedes

pytestmark = pytest.mark.unit


def read(item: int, at: float, cache: str = "HIT", source: str = "redis", detail: str = "") -> Op:
    return Op("read", item, "delete", "k6", at, at + 0.5, 200, 1, cache, source, detail)


def degraded(item: int, at: float) -> Op:
    return read(item, at, "BYPASS", "database", "redis-unavailable")


def test_one_query_per_key_is_no_stampede_and_two_are():
    ops = [read(1, 10.0), read(2, 11.0)]
    assert stampedes(ops, 5.0, 20.0, {1: 1, 2: 0}) == {}
    assert stampedes(ops, 5.0, 20.0, {1: 2}) == {"1": {"queries": 2, "degraded": 0}}


def test_each_degraded_database_answer_during_the_event_allows_one_more_query():
    ops = [degraded(1, 10.0), degraded(2, 10.0), degraded(2, 12.0)]
    assert stampedes(ops, 5.0, 20.0, {1: 2, 2: 3}) == {}
    assert stampedes(ops, 5.0, 20.0, {1: 3}) == {"1": {"queries": 3, "degraded": 1}}


def test_only_degraded_reads_from_the_database_and_overlapping_the_event_count():
    ops = [
        degraded(1, 1.0),  # over before the event began
        degraded(1, 30.0),  # began after it ended
        read(1, 10.0, "BYPASS", "local", "redis-unavailable"),  # a worker's copy: no query
        read(1, 11.0, "MISS", "database"),  # an ordinary fill
    ]
    assert stampedes(ops, 5.0, 20.0, {1: 2}) == {"1": {"queries": 2, "degraded": 0}}
    assert stampedes([degraded(1, 4.8)], 5.0, 20.0, {1: 2}) == {}  # still running at the start
