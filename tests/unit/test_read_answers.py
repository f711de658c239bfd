"""What one read answers, rule by rule (reads.py): the result and tier, the
entry's time left (``ttl_remaining``: the ``Cache-Status`` TTL and the page's
countdown), this worker's copy (which carries the bytes prepared for it), and
the steps' timings (``Server-Timing``)."""

from __future__ import annotations

import random
import threading

import pytest

from cachelab import metrics
from cachelab.engine.keys import version_target
from cachelab.engine.model import BYPASS, DATABASE, HIT, LOCAL, MEMORY, MISS, REDIS, STALE
from cachelab.engine.store import CacheUnavailable
from loadtest.stack import wait_until
from tests.unit.fakes import FakeClock, counter

TTL = 10  # the unit settings' CACHE_TTL_SECONDS


def key(settings, item: int = 1):
    return version_target(settings.cache_namespace, item)


def age(service, raw, target, seconds_past_soft: float) -> None:
    """Redis' PTTL says the entry is ``seconds_past_soft`` past its soft expiry."""
    read = service.store.read(target.key)
    raw.pexpire(target.key, int((read.entry.grace - seconds_past_soft) * 1000))


def test_a_miss_then_a_redis_hit_carry_their_time_left_and_a_copy(settings, db, services):
    service = services(settings, db, cache_strategy="swr")  # no tier 1: every hit is Redis'
    target = key(settings)
    miss = service.reads.get(target)
    assert (miss.result, miss.tier, miss.stored) == (MISS, DATABASE, True)
    assert TTL - 1 < miss.ttl_remaining <= TTL and {"db", "cache"} <= set(miss.timings_ms)
    hit = service.reads.get(target)
    assert (hit.result, hit.tier) == (HIT, REDIS)
    assert 0 < hit.ttl_remaining <= miss.ttl_remaining
    assert hit.copy is not None and hit.copy.entry == hit.entry  # its prepared bytes live there
    assert "cache" in hit.timings_ms and "db" not in hit.timings_ms
    assert not miss.superseded and not hit.superseded  # nothing newer was written


@pytest.mark.parametrize("strategy", ["none", "swr"])
def test_a_bypass_says_why(settings, db, services, strategy):
    service = services(settings, db, cache_strategy=strategy)
    target = key(settings)
    lookup = service.reads.get(target, bypass=strategy != "none")
    assert (lookup.result, lookup.tier) == (BYPASS, DATABASE)
    assert lookup.detail == ("strategy-none" if strategy == "none" else "request")
    assert service.store.read(target.key).entry is None  # nothing cached


def test_a_stale_answer_says_how_long_ago_it_went_stale(settings, db, services, raw):
    # Without tracking: the invalidation of the aging below cannot race with the read.
    service = services(settings, db, cache_strategy="swr", cache_tracking="off")
    target = key(settings)
    service.reads.get(target)
    age(service, raw, target, 3.0)
    stale = service.reads.get(target)
    assert (stale.result, stale.tier) == (STALE, REDIS)
    assert -3.5 < stale.ttl_remaining < -2.5
    assert stale.copy is not None and stale.copy.entry == stale.entry


def test_cache_aside_never_serves_past_its_ttl(settings, db, services, raw):
    """Its own entries have no grace (Redis drops them at the TTL); one left by
    another strategy on the same Redis (the lab switched CACHE_STRATEGY) has,
    and is still not served once its TTL is over."""
    swr = services(settings, db, cache_strategy="swr")
    aside = services(settings, db, cache_strategy="cache-aside")
    target = key(settings)
    swr.reads.get(target)
    age(swr, raw, target, 0.5)  # still in Redis, past its TTL
    again = aside.reads.get(target)
    assert (again.result, again.tier) == (MISS, DATABASE)
    assert db.calls["version"] == 2


def test_a_memory_hit_times_its_lookup_and_counts_down(settings, db, services):
    clock = FakeClock()
    service = services(settings, db, clock=clock)
    target = key(settings)
    service.reads.get(target)
    first = wait_until(
        lambda: (hit := service.reads.get(target)).tier == MEMORY and hit,
        5,
        interval=0.01,
        message="tier 1 to serve the confirmed copy",
    )
    assert 0 <= first.timings_ms["memory"] < 1000 and "cache" not in first.timings_ms
    assert first.copy is not None and first.copy.entry == first.entry
    clock.advance(2.0)
    hit = service.reads.get(target)
    assert (hit.result, hit.tier) == (HIT, MEMORY)
    assert hit.ttl_remaining == pytest.approx(first.ttl_remaining - 2.0, abs=0.05)


def test_without_redis_the_copy_answers_with_its_time_left(settings, db, worker_without_redis):
    clock = FakeClock()
    service = worker_without_redis(clock)
    target = key(settings)
    first = service.reads.get(target)
    assert (first.result, first.tier, first.detail) == (BYPASS, DATABASE, "redis-unavailable")
    assert TTL - 1 < first.ttl_remaining <= TTL and first.copy is not None
    assert "db" in first.timings_ms and "cache" in first.timings_ms
    clock.advance(4.0)
    local = service.reads.get(target)
    assert (local.result, local.tier, local.detail) == (BYPASS, LOCAL, "redis-unavailable")
    assert local.ttl_remaining == pytest.approx(first.ttl_remaining - 4.0, abs=0.05)
    assert local.copy is not None and local.entry == first.entry
    assert "cache" in local.timings_ms
    assert db.calls["version"] == 1


def test_redis_lost_mid_fill_answers_from_the_database_degraded(
    settings, db, services, monkeypatch
):
    """Redis answered the read (nothing there), then failed at the lease: the
    fill's RedisDown ends on the degraded path, which queries once itself."""
    service = services(settings, db, cache_tracking="off")
    target = key(settings)

    def acquire(*args, **kwargs):
        raise CacheUnavailable("redis timeout (simulated)")

    monkeypatch.setattr(service.store, "acquire", acquire)
    answer = service.reads.get(target)
    assert (answer.result, answer.tier, answer.detail) == (BYPASS, DATABASE, "redis-unavailable")
    assert answer.target == target and answer.entry.value["version"].startswith("PostgreSQL")
    assert TTL - 1 < answer.ttl_remaining <= TTL
    assert {"cache", "db"} <= set(answer.timings_ms)  # the read of Redis, then the query
    assert db.calls["version"] == 1


def test_a_stale_copy_reseeds_redis_answers_stale_and_refreshes_once(
    settings, db, services, restart_empty, raw
):
    """Rule 3c past the soft expiry: Redis lost the entry, this worker's
    confirmed copy is stale but within its hard expiry. It is written back for
    the rest of its life, served as STALE with how long ago it went stale, and
    one background refresh replaces it."""
    service = services(settings, db, cache_ttl_seconds=1, cache_grace_seconds=60)
    target = key(settings)
    service.reads.get(target)
    copy = wait_until(
        lambda: service.reads.get(target).tier == MEMORY and service.tier1.last_copy(target.key),
        5,
        interval=0.01,
        message="a confirmed copy",
    )
    wait_until(
        lambda: copy.soft_deadline < service.reads.clock(),
        5,
        interval=0.05,
        message="the copy's soft expiry",
    )
    restart_empty(service)
    refreshed = counter(metrics.REFRESHES[("stale", "ok")])
    db.gate = threading.Event()  # the refresh's query waits: the written-back copy is seen
    try:
        lookup = service.reads.get(target)
        assert (lookup.result, lookup.tier, lookup.detail) == (STALE, REDIS, "reseeded")
        assert lookup.entry == copy.entry and lookup.copy is copy
        assert -5 < lookup.ttl_remaining < 0
        written_back = service.store.read(target.key)
        assert written_back.entry == copy.entry
        assert 55_000 < raw.pttl(target.key) <= 61_000  # the copy's hard expiry, not a new TTL
        assert db.started.acquire(timeout=5)  # one refresh, in the background
    finally:
        db.gate.set()
    wait_until(
        lambda: counter(metrics.REFRESHES[("stale", "ok")]) == refreshed + 1,
        5,
        interval=0.01,
        message="the refresh",
    )
    assert db.calls["version"] == 2


def test_without_redis_only_a_stale_copy_is_refreshed_and_only_once(
    settings, db, worker_without_redis
):
    """Rule 5: the copy answers; once past its soft expiry, one local refresh
    (this worker's alone: Redis is down) runs behind it, however many read."""
    clock = FakeClock()
    service = worker_without_redis(clock)
    target = key(settings)
    service.reads.get(target)  # from the database, kept as the copy
    # A refresh that starts stays in flight, and says it started.
    db.gate, db.started = threading.Event(), threading.Semaphore(0)
    try:
        clock.advance(TTL - 0.5)
        fresh = service.reads.get(target)
        assert fresh.tier == LOCAL and 0 < fresh.ttl_remaining <= 0.5
        assert service.jobs.pending() == 0  # fresh: nothing to refresh
        clock.advance(1.0)
        for _ in range(3):
            stale = service.reads.get(target)
            assert stale.tier == LOCAL and stale.ttl_remaining < 0
        assert service.jobs.pending() == 1 and db.started.acquire(timeout=5)
    finally:
        db.gate.set()
    wait_until(lambda: service.jobs.pending() == 0, 5, interval=0.01, message="the refresh")
    assert db.calls["version"] == 2


def test_a_memory_hit_near_its_expiry_refreshes_early(settings, db, services):
    """XFetch on tier 1's copies too: a hot key served from memory alone would
    otherwise never be refreshed before it expires."""

    class Certain(random.Random):
        def random(self):
            return 0.999999  # -ln(1 - u) is large: always due once close enough

    clock = FakeClock()
    service = services(settings, db, clock=clock, rng=Certain(), xfetch_beta=1.0)
    target = key(settings)
    db.delay = 0.05  # delta: -ln(1e-6) * 0.05 s = 0.7 s of lead
    service.reads.get(target)
    db.delay = 0.0
    wait_until(
        lambda: service.reads.get(target).tier == MEMORY,
        5,
        interval=0.01,
        message="tier 1 to serve the confirmed copy",
    )
    before = counter(metrics.REFRESHES[("early", "ok")])
    clock.advance(TTL - 2.0)  # 2 s left: not due yet
    assert service.reads.get(target).tier == MEMORY
    assert service.jobs.pending() == 0
    clock.advance(1.6)  # 0.4 s left: due
    assert service.reads.get(target).tier == MEMORY
    wait_until(
        lambda: counter(metrics.REFRESHES[("early", "ok")]) == before + 1,
        5,
        interval=0.01,
        message="an early refresh",
    )
    assert db.calls["version"] == 2


def test_cache_aside_never_refreshes_early(settings, db, services, raw):
    """cache-aside is the baseline the lab compares against: its entries expire
    and the next reader queries, with no refresh ahead of time."""

    class Certain(random.Random):
        def random(self):
            return 0.999999

    service = services(settings, db, rng=Certain(), cache_strategy="cache-aside", xfetch_beta=1.0)
    target = key(settings)
    db.delay = 0.05
    service.reads.get(target)
    db.delay = 0.0
    raw.pexpire(target.key, 400)  # 0.4 s left: XFetch would be due
    db.gate = threading.Event()  # a refresh would stay in flight
    try:
        assert service.reads.get(target).result == HIT
        assert service.jobs.pending() == 0
    finally:
        db.gate.set()
    assert db.calls["version"] == 1


# -- from mutmut's survivors of reads.py (2026-12-05) -----------------------------------
def test_a_hit_carries_no_detail_and_was_not_stored(settings, db, services):
    service = services(settings, db, cache_strategy="swr")
    target = key(settings)
    service.reads.get(target)
    hit = service.reads.get(target)
    assert (hit.result, hit.tier, hit.detail, hit.stored) == (HIT, REDIS, "", False)


def test_a_memory_hit_times_its_lookup_in_milliseconds(settings, db, services):
    service = services(settings, db)
    target = key(settings)
    hit = wait_until(
        lambda: (found := service.reads.get(target)).tier == MEMORY and found,
        5,
        interval=0.01,
        message="a memory hit",
    )
    assert 0.0001 < hit.timings_ms["memory"] < 100


def test_a_fresh_copy_reseeds_redis_as_a_hit_without_a_refresh(
    settings, db, services, restart_empty, monkeypatch
):
    """Rule 3c before the soft expiry, under a second of it left: the copy goes
    back to Redis and answers HIT for the key it was read for; nothing is
    refreshed (it is not stale)."""
    clock = FakeClock()
    service = services(settings, db, clock=clock)
    target = key(settings)
    service.reads.get(target)
    wait_until(
        lambda: service.reads.get(target).tier == MEMORY,
        5,
        interval=0.01,
        message="a confirmed copy",
    )
    # The copy's deadlines come from Redis' PTTL (real time): under 0.9 s left.
    clock.advance(settings.cache_ttl_seconds - 0.9)
    restart_empty(service)
    refreshes: list = []
    monkeypatch.setattr(
        service.fills, "refresh_in_background", lambda *args: refreshes.append(args)
    )
    lookup = service.reads.get(target)
    assert (lookup.result, lookup.tier, lookup.detail) == (HIT, REDIS, "reseeded")
    assert lookup.target == target and 0 < lookup.ttl_remaining <= 0.9
    assert refreshes == []
