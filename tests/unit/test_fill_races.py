"""A cold key's fill, as the users who wait for it see it (fills.py: ``_lead``,
``_store``): where their time went, what a fill that lost to a newer write
answers (to its own request, and to the requests that followed it), how a
waiter without tracking polls, and that cache-aside's write respects the
breaker.

Written from mutmut's survivors of ``fills.py``: each test pins down what some
of them changed (a timing's label, a superseded fill's answer, the waiter's
first poll, the patience of an unguarded write).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from cachelab import metrics
from cachelab.config import Settings
from cachelab.engine import fills
from cachelab.engine.fills import FillTimeout
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.model import DATABASE, MISS, REDIS, Loaded, Lookup, Timer, new_entry
from cachelab.resilience.singleflight import FlightTimeout
from loadtest.stack import wait_until
from tests.unit.fakes import counter, set_lease

ITEM = 3


def open_breaker(store) -> None:
    """Opens the worker's breaker with failures it counts (Redis itself stays up)."""
    for _ in range(store.breaker.failure_threshold):
        with pytest.raises(RuntimeError), store.breaker.guard((RuntimeError,)):
            raise RuntimeError("injected: a failed call")
    assert store.breaker.state == "open"


# -- where a cold key's time went (Server-Timing, timings_ms) ----------------------------
def test_a_cold_key_s_answer_says_where_its_time_went(settings, db, services):
    service = services(settings, db)
    lookup = service.reads.get(version_target(settings.cache_namespace, 1))
    assert (lookup.result, lookup.tier) == (MISS, DATABASE)
    # Redis read, lease taken, query run, entry written: nothing else.
    assert set(lookup.timings_ms) == {"cache", "lock", "db"}


def test_a_fill_keeps_the_copy_it_stored_as_confirmed(settings, db, services):
    """Without tracking (else the worker's own write invalidates the copy it is
    about to keep), a stored fill's copy is kept as confirmed -- Redis holds it
    -- and the next read is served from memory; the answer carries the copy."""
    service = services(settings, db, cache_tracking="off")
    target = version_target(settings.cache_namespace, 6)
    lookup = service.reads.get(target)
    assert lookup.stored and lookup.copy is not None and lookup.copy.confirmed
    assert service.reads.get(target).tier == "memory"
    assert db.calls["version"] == 1


# -- a fill that lost to a newer write ---------------------------------------------------
def race(service, db, target, meanwhile: Callable[[], None]) -> tuple[Lookup, Lookup]:
    """The leader's query held in the database, a second request of the same
    key following it in the same worker; ``meanwhile`` runs, then the query
    returns. Answers (leader's, follower's)."""
    db.gate = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        leader = pool.submit(service.reads.get, target)
        assert db.started.acquire(timeout=5)
        follower = pool.submit(service.reads.get, target)
        wait_until(
            lambda: service.fills.flights.followers(target.key) == 1,
            5,
            interval=0.005,
            message="the second request to follow the first's fill",
        )
        try:
            meanwhile()
        finally:
            db.gate.set()
        return leader.result(10), follower.result(10)


def assert_superseded(lookup: Lookup, version: int, ttl: float) -> None:
    """The request that ran the query gets its answer, marked as lost, with the
    entry's TTL and no copy kept."""
    assert (lookup.result, lookup.tier, lookup.superseded) == (MISS, DATABASE, True)
    assert lookup.value["version"] == version
    assert lookup.ttl_remaining == pytest.approx(ttl, abs=ttl * 0.2)
    assert lookup.copy is None and not lookup.stored


def test_a_fill_whose_row_changed_during_the_query_answers_its_request_only(settings, db, services):
    service = services(settings, db)
    target = item_target(settings.cache_namespace, ITEM, "delete")
    before = counter(metrics.FILLS_SUPERSEDED["row-changed"])
    leader, follower = race(service, db, target, lambda: db.update_item(ITEM, "newer"))
    assert_superseded(leader, 1, settings.cache_ttl_seconds)
    assert counter(metrics.FILLS_SUPERSEDED["row-changed"]) == before + 1
    # The follower began after the query had read the row: it looks again.
    assert (follower.value["version"], follower.tier, follower.stored) == (2, DATABASE, True)
    assert db.calls["item"] == 2


def test_a_fill_that_redis_refuses_for_a_newer_entry_keeps_no_copy(settings, db, services):
    service = services(settings, db)
    target = item_target(settings.cache_namespace, ITEM, "delete")
    row = db.items[ITEM]

    def newer_in_redis() -> None:
        loaded = Loaded({**row, "payload": "written meanwhile"}, row["version"], 0.01)
        newer = new_entry(loaded, 10**17, 60.0, 60.0, 1.0)  # fences: server µs
        assert service.store.write(target.key, newer, newer.px)

    before = counter(metrics.FILLS_SUPERSEDED["newer-in-redis"])
    leader, follower = race(service, db, target, newer_in_redis)
    assert_superseded(leader, 1, settings.cache_ttl_seconds)
    assert counter(metrics.FILLS_SUPERSEDED["newer-in-redis"]) == before + 1
    # The follower takes what Redis holds, without a second query; the only
    # copy the worker keeps is that one.
    assert (follower.tier, follower.value["payload"]) == (REDIS, "written meanwhile")
    kept = service.tier1.servable(target.key, True)
    assert kept is not None and kept.entry.value["payload"] == "written meanwhile"
    assert db.calls["item"] == 1


def test_a_fill_whose_row_changed_after_its_write_is_retracted(settings, db, services, monkeypatch):
    service = services(settings, db)
    target = item_target(settings.cache_namespace, ITEM, "delete")
    write = service.store.write

    def write_then_commit(key, entry, px, **kwargs):
        stored = write(key, entry, px, **kwargs)
        if entry.version == 1:
            db.update_item(ITEM, "committed just after the fill's write")
        return stored

    monkeypatch.setattr(service.store, "write", write_then_commit)
    before = counter(metrics.FILLS_SUPERSEDED["row-changed"])
    leader, follower = race(service, db, target, lambda: None)
    assert_superseded(leader, 1, settings.cache_ttl_seconds)
    assert counter(metrics.FILLS_SUPERSEDED["row-changed"]) == before + 1
    assert follower.value["version"] == 2
    assert service.store.read(target.key).entry.version == 2  # the retraction held


# -- waiting for another process's fill ------------------------------------------------
class Waits(list):
    """The timeouts of a worker's waits, in order; ``ends``: when each would end."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def within(self, started: float, lock_wait: float) -> bool:
        """No wait was to end after the lock wait (from ``started``) ran out."""
        return max(self.ends) <= started + lock_wait + 0.005


def record_waits(service, monkeypatch) -> Waits:
    """The timeouts of every wait of the worker's waiters, in order."""
    waits = Waits()
    watch, unwatch = service.tier1.watch, service.tier1.unwatch

    class Recorded:
        def __init__(self, event: threading.Event) -> None:
            self.event = event

        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            waits.ends.append(time.monotonic() + timeout)
            return self.event.wait(timeout)

        def clear(self) -> None:
            self.event.clear()

    monkeypatch.setattr(service.tier1, "watch", lambda keys: Recorded(watch(keys)))
    monkeypatch.setattr(service.tier1, "unwatch", lambda keys, ev: unwatch(keys, ev.event))
    return waits


def test_a_waiter_s_time_is_the_lease_s(settings, db, services, monkeypatch):
    """A worker that waits for another process's fill spends its time on the
    lease (taking it, reading what the holder wrote, waiting to be woken),
    not in the database."""
    filler, waiter = services(settings, db), services(settings, db)
    target = version_target(settings.cache_namespace, 2)
    waits = record_waits(waiter, monkeypatch)
    db.gate = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(filler.reads.get, target)
        assert db.started.acquire(timeout=5)
        second = pool.submit(waiter.reads.get, target)
        wait_until(lambda: waits, 5, interval=0.005, message="the second worker to wait")
        db.gate.set()
        filled, waited = first.result(10), second.result(10)
    assert (filled.tier, waited.tier, waited.detail) == (DATABASE, REDIS, "collapsed")
    assert set(waited.timings_ms) == {"cache", "lock"}
    assert db.calls["version"] == 1


def test_a_waiter_without_tracking_polls_soon_then_backs_off(settings, db, services, monkeypatch):
    """Without invalidations to wake it, a waiter re-reads Redis after 20 ms,
    then 50, 100 and 200 ms: a fill that lands quickly is seen quickly, a slow
    one costs few reads."""
    service = services(settings, db, cache_lock_wait_seconds=0.6)
    target = version_target(settings.cache_namespace, 3)
    set_lease(service.store.client, target.lease_key, "another-process", 5000)
    monkeypatch.setattr(service.fills, "tracking_active", lambda: False)
    waits = record_waits(service, monkeypatch)
    started = time.monotonic()
    with pytest.raises(FillTimeout, match=r"held the lease of .* for 0.6s without filling it"):
        service.fills.fill(target, Timer())
    assert waits[:4] == pytest.approx([0.02, 0.05, 0.1, 0.2])
    assert waits[4:] and max(waits[4:]) <= 0.2
    assert waits.within(started, 0.6)  # never past the lock wait
    assert db.calls["version"] == 0


@pytest.mark.parametrize(
    ("lease_ms", "watch", "lock_wait", "first_wait"),
    [
        (5000, 0.05, 0.3, 0.05),  # re-checks at least every WATCH seconds
        (100, 0.5, 2.0, 0.1),  # ... and when the lease lapses, sooner
    ],
)
def test_a_waiter_with_tracking_rechecks_by_the_lease_and_the_watch(
    settings, db, services, monkeypatch, lease_ms, watch, lock_wait, first_wait
):
    """With tracking, a fill's invalidation wakes the waiter; it still looks
    again after ``_WATCH_SECONDS`` (an invalidation can be lost) and when the
    holder's lease runs out (a dead holder: it takes over), never past its
    lock wait."""
    monkeypatch.setattr(fills, "_WATCH_SECONDS", watch)
    service = services(settings, db, cache_lock_wait_seconds=lock_wait)
    assert service.fills.tracking_active()
    target = version_target(settings.cache_namespace, 5)
    set_lease(service.store.client, target.lease_key, "another-process", lease_ms)
    waits = record_waits(service, monkeypatch)
    started = time.monotonic()
    try:
        filled = service.fills.fill(target, Timer())
    except FillTimeout:
        filled = None
    assert waits[0] == pytest.approx(first_wait, abs=0.02)
    assert waits.within(started, lock_wait)
    # A live lease is waited out to the deadline; a lapsed one is taken over.
    assert (filled is None) == (lease_ms / 1000 > lock_wait)


# -- cache-aside's write ------------------------------------------------------------------
def test_cache_aside_writes_through_the_breaker(settings, db, services):
    """Cache-aside's fill is not a lease holder's: while the breaker is open
    its write is not attempted (no patient call past the breaker), and the
    user still gets the answer."""
    service = services(settings, db, cache_strategy="cache-aside")
    target = version_target(settings.cache_namespace, 4)
    open_breaker(service.store)
    filled = service.fills.fill_each(target, Timer())
    assert filled.entry.value and not filled.stored
    assert service.store.client.exists(target.key) == 0  # read past the breaker


def test_concurrent_misses_of_an_unguarded_key_each_store_their_answer(settings, db, services):
    """The unguarded modes (the plain ``DEL``/``SET`` most code does, shown for
    comparison) write with a plain SET: with cache-aside's concurrent misses
    (no single flight) both query, the second write replaces the first, and
    both answers say ``stored``. (A guarded key keeps the higher fence.)"""
    service = services(settings, db, cache_strategy="cache-aside")
    target = item_target(settings.cache_namespace, ITEM, "delete", guarded=False)
    db.gate = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = [pool.submit(service.reads.get, target) for _ in range(2)]
        for _ in range(2):
            assert db.started.acquire(timeout=5)
        db.gate.set()
        lookups = [answer.result(10) for answer in answers]
    assert [(x.tier, x.stored) for x in lookups] == [(DATABASE, True)] * 2
    assert db.calls["item"] == 2


# -- what a fill records ----------------------------------------------------------------
def test_a_not_found_entry_records_how_long_its_query_took(settings, db, services):
    """XFetch refreshes an entry early in proportion to its query time: a
    cached "not found" carries it too."""
    service = services(settings, db)
    del db.items[ITEM]  # inside the table's range, but gone
    db.delay = 0.05
    lookup = service.reads.get(item_target(settings.cache_namespace, ITEM, "delete"))
    assert not lookup.found
    assert 0.04 <= lookup.entry.delta < 1.0


def test_one_lease_keeper_thread_per_worker(settings, db, services):
    """Every lease the worker holds is renewed by one daemon thread, started
    with the first lease (never one per fill, never keeping the process up)."""
    before = {t for t in threading.enumerate() if t.name == "lease-keeper"}
    service = services(settings, db)
    for n in range(3):
        service.reads.get(version_target(settings.cache_namespace, 10 + n))
    keepers = {t for t in threading.enumerate() if t.name == "lease-keeper"} - before
    assert len(keepers) == 1 and all(t.daemon for t in keepers)
    assert service.fills._keeper in keepers


class HalfRandom(random.Random):
    """Every draw is 0.5: the jitter is exactly half the ratio."""

    def random(self) -> float:
        return 0.5


def test_the_ttl_jitter_draws_from_the_injected_random_source(settings, db, services):
    service = services(settings, db, rng=HalfRandom(), cache_jitter_ratio=0.5)
    lookup = service.reads.get(version_target(settings.cache_namespace, 20))
    assert lookup.entry.ttl == pytest.approx(settings.cache_ttl_seconds * (1 - 0.5 * 0.5))


# -- following a fill in the same worker ------------------------------------------------
def test_a_follower_s_time_is_the_lease_s(settings, db, services):
    """A request that follows another's fill in the same worker waits on it
    (``lock``), then takes the entry from Redis: no query of its own."""
    service = services(settings, db)
    _, follower = race(service, db, version_target(settings.cache_namespace, 21), lambda: None)
    assert (follower.tier, db.calls["version"]) == (REDIS, 1)
    assert set(follower.timings_ms) == {"cache", "lock"}


def test_a_follower_gives_up_after_the_fill_wait(settings, db, services, monkeypatch):
    """A follower waits at most ``fill_wait_seconds`` for the leader (then a
    503 ``fill-timeout``), never as long as a stuck query."""
    monkeypatch.setattr(Settings, "fill_wait_seconds", property(lambda _self: 0.2))
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 22)
    db.gate = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            leader = pool.submit(service.fills.fill, target, Timer())
            assert db.started.acquire(timeout=5)
            follower = pool.submit(service.fills.fill, target, Timer())
            with pytest.raises(FlightTimeout):
                follower.result(timeout=3)
            db.gate.set()
            assert leader.result(10).stored
    finally:
        db.gate.set()


# -- leases ------------------------------------------------------------------------------
def test_a_lease_lost_mid_fill_is_neither_released_nor_an_error(settings, db, services, raw):
    """Another process took the key's lease while this worker's query ran (its
    renewal was refused): the fill still answers, and the release leaves the
    other process's lease alone."""
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 23)
    db.gate = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(service.reads.get, target)
            assert db.started.acquire(timeout=5)
            set_lease(raw, target.lease_key, "another-process", 5000)
            service.fills.renew_all()
            assert service.fills.held() == []
            db.gate.set()
            assert answer.result(10).value
    finally:
        db.gate.set()
    assert raw.get(target.lease_key).startswith(b"another-process ")


def test_a_worker_that_shuts_down_releases_its_leases(settings, db, services, raw):
    """At exit a worker hands its leases back at once: another process need
    not wait for them to lapse."""
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 24)
    db.gate = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(service.reads.get, target)
            assert db.started.acquire(timeout=5)
            assert raw.get(target.lease_key) is not None
            service.fills.close()
            assert raw.get(target.lease_key) is None
            db.gate.set()
    finally:
        db.gate.set()


def test_a_request_that_looks_again_may_follow_a_third_request_s_fill(
    settings, db, services, monkeypatch
):
    """A follower whose fill read the row before the follower began looks again
    in a new flight; if a third request leads that flight, the follower waits
    for it (its time counted as ``lock``) and shares its answer."""
    service = services(settings, db)
    target = item_target(settings.cache_namespace, ITEM, "delete")
    flights = service.fills.flights
    join = flights.join
    joins: list[str] = []
    third: list = []

    def join_and_let_a_third_lead(key: str):
        joins.append(threading.current_thread().name)
        if len(joins) == 3:  # the follower's second flight: a third request leads it first
            db.gate = threading.Event()
            third.append(pool.submit(service.reads.get, target))
            wait_until(lambda: flights.in_flight(key), 5, interval=0.005, message="the third")
        return join(key)

    monkeypatch.setattr(flights, "join", join_and_let_a_third_lead)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = db.gate = threading.Event()
        leader = pool.submit(service.reads.get, target)
        assert db.started.acquire(timeout=5)
        follower = pool.submit(service.reads.get, target)
        wait_until(lambda: flights.followers(target.key) == 1, 5, interval=0.005, message="F")
        db.update_item(ITEM, "newer")  # the leader's answer is superseded
        first.set()
        wait_until(
            lambda: third and flights.followers(target.key) == 1,
            5,
            interval=0.005,
            message="the follower to follow the third request",
        )
        db.gate.set()
        answers = leader.result(10), follower.result(10), third[0].result(10)
    assert [a.value["version"] for a in answers] == [1, 2, 2]
    assert (answers[1].detail, db.calls["item"]) == ("collapsed", 2)
    assert "lock" in answers[1].timings_ms
