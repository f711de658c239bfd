"""The engine end to end in one process: strategies, fills, refreshes, outages.

Two CacheService objects on one Valkey stand for two workers (or containers).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from cachelab import metrics
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.model import BYPASS, DATABASE, HIT, LOCAL, MISS, STALE, Timer
from cachelab.engine.store import CacheUnavailable
from cachelab.postgres.database import DatabaseUnavailable
from cachelab.resilience.background import BackgroundJobs
from cachelab.resilience.bulkhead import Overloaded
from loadtest.stack import wait_until
from tests.unit.fakes import FakeClock, counter


def target(settings, item=1):
    return version_target(settings.cache_namespace, item)


def parallel(count: int, func):
    barrier = threading.Barrier(count)

    def run(_):
        barrier.wait(10)
        return func()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


# -- cold keys ---------------------------------------------------------------------
def test_concurrent_misses_in_two_workers_run_the_query_once(settings, db, services):
    workers = [services(settings, db), services(settings, db)]
    db.delay = 0.3
    lookups = parallel(20, lambda: workers[random.randrange(2)].reads.get(target(settings)))
    assert db.calls["version"] == 1
    assert sum(lookup.stored for lookup in lookups) == 1
    assert {lookup.result for lookup in lookups} == {MISS}
    assert sum(lookup.detail == "collapsed" for lookup in lookups) == 19


def test_cache_aside_lets_every_concurrent_miss_query(settings, db, services):
    service = services(settings, db, cache_strategy="cache-aside")
    db.delay = 0.2
    parallel(5, lambda: service.reads.get(target(settings)))
    assert db.calls["version"] == 5


def test_an_orphaned_lease_delays_a_fill_by_at_most_its_length(settings, db, services):
    """Defect: a fill lock outlived its SIGKILLed holder for 35 s, every request
    waited CACHE_LOCK_WAIT_SECONDS and then queried without storing."""
    holder, other = services(settings, db), services(settings, db)
    key = target(settings)
    assert holder.fills._try_acquire(key).fence > 0  # the holder's lease...
    holder.fills._stopped = True  # ...and then it is killed: nothing renews or releases it
    started = time.monotonic()
    lookup = other.reads.get(key)
    waited = time.monotonic() - started
    assert lookup.result == MISS and lookup.stored and lookup.detail == ""
    assert waited <= settings.cache_lock_lease_seconds + 0.5, waited
    assert other.store.read(key.key).entry is not None
    assert db.calls["version"] == 1


def test_a_waiter_never_queries_beside_a_live_lease_and_gives_up_at_its_deadline(
    settings, db, services
):
    """Defect: with PostgreSQL slower than CACHE_LOCK_WAIT_SECONDS, every waiting
    worker gave up on a lease that was alive and renewed and ran the query
    itself (6 workers: 6 queries). A waiter now waits while the lease lives and
    answers 503 (FillTimeout) at its deadline, without a second query."""
    slow_holder = services(settings, db)
    waiters = [services(settings, db, cache_lock_wait_seconds=0.3) for _ in range(5)]
    holder_gate = db.gate = threading.Event()
    holding = threading.Thread(target=slow_holder.reads.get, args=(target(settings),))
    holding.start()
    assert db.started.acquire(timeout=5)
    before = counter(metrics.LOCK_WAITS["timeout"])
    outcomes = parallel(5, lambda: _outcome(lambda: waiters.pop().reads.get(target(settings))))
    assert outcomes == ["FillTimeout"] * 5
    assert counter(metrics.LOCK_WAITS["timeout"]) == before + 5
    assert db.calls["version"] == 1
    holder_gate.set()
    holding.join(5)
    assert slow_holder.store.read(target(settings).key).entry is not None


def _outcome(call) -> str:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc).__name__
    return "ok"


def test_a_holder_slower_than_its_lease_keeps_it(settings, db, services):
    """Defect: the lock TTL did not cover the holder's whole path; now the lease
    is renewed while it works, so nobody else queries meanwhile."""
    holder = services(settings, db)
    other = services(settings, db)
    db.delay = 3 * settings.cache_lock_lease_seconds
    thread = threading.Thread(target=holder.reads.get, args=(target(settings),))
    thread.start()
    assert db.started.acquire(timeout=5)
    lookup = other.reads.get(target(settings))
    thread.join(10)
    assert lookup.detail == "collapsed" and db.calls["version"] == 1


def test_followers_in_a_worker_wait_at_most_their_deadline():
    """Defect: threads waiting on a single flight had no deadline."""
    from cachelab.resilience.singleflight import FlightTimeout, SingleFlight

    flights: SingleFlight[None] = SingleFlight()
    leader = flights.join("k")
    assert leader.leader and flights.in_flight("k")
    follower = flights.join("k")
    started = time.monotonic()
    with pytest.raises(FlightTimeout):
        follower.wait(0.2)
    assert time.monotonic() - started < 1.0
    assert flights.followers("k") == 0  # a follower that gave up is no longer counted
    leader.resolve(None)
    assert not flights.in_flight("k") and flights.join("k").leader


def test_a_failed_flight_fails_its_followers_and_is_not_remembered():
    from cachelab.resilience.singleflight import SingleFlight

    flights: SingleFlight[int] = SingleFlight()
    leader, follower = flights.join("k"), flights.join("k")
    leader.fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        follower.wait(1)
    assert flights.join("k").leader


# -- stale entries and refreshes -----------------------------------------------------
def make_stale(service, raw, key, seconds_past=1.0):
    """Age the entry in Redis: its PTTL says it is past the soft expiry."""
    read = service.store.read(key.key)
    raw.pexpire(key.key, int((read.entry.grace - seconds_past) * 1000))


def test_a_stale_entry_is_served_at_once_while_one_refresh_runs(settings, db, services, raw):
    service = services(settings, db, cache_strategy="swr")
    key = target(settings)
    service.reads.get(key)
    make_stale(service, raw, key)
    db.gate = threading.Event()
    lookups = [service.reads.get(key) for _ in range(20)]
    assert {lookup.result for lookup in lookups} == {STALE}
    assert db.started.acquire(timeout=5) and db.calls["version"] == 2  # one refresh
    db.gate.set()
    wait_until(lambda: service.reads.get(key).result == HIT, 5, interval=0.01, message="refreshed")
    assert db.calls["version"] == 2


def test_a_refresh_that_lost_the_race_reads_again_and_skips(settings, db, services, raw):
    """Defect: a refresh took the lock without reading again, so a worker that
    saw the stale entry just before another worker's write queried again."""
    worker_a = services(settings, db, cache_strategy="swr")
    worker_b = services(settings, db, cache_strategy="swr")
    key = target(settings)
    worker_a.reads.get(key)
    make_stale(worker_a, raw, key)
    seen_by_a = worker_a.store.read(key.key).entry  # A read the stale entry...
    worker_b.fills._refresh(key, seen_by_a, "stale")  # ...B refreshed it first
    assert db.calls["version"] == 2
    before = counter(metrics.REFRESHES[("stale", "already-fresh")])
    worker_a.fills._refresh(key, seen_by_a, "stale")  # A's refresh gets the free lease
    assert db.calls["version"] == 2
    assert counter(metrics.REFRESHES[("stale", "already-fresh")]) == before + 1


def test_a_worker_that_lost_the_lease_does_not_retry_on_every_stale_read(
    settings, db, services, raw
):
    """Defect: 1,395 SETs for 4,315 STALE reads in 8 s."""
    # A lease that outlives the test: on a loaded machine B's keeper may miss a
    # renewal of the fixture's 0.6 s lease; A would then rightly take the lapsed
    # lease and its refresh would block on the gate (CI saw "A idle" time out).
    worker_a = services(settings, db, cache_strategy="swr", cache_lock_lease_seconds=30.0)
    worker_b = services(settings, db, cache_strategy="swr", cache_lock_lease_seconds=30.0)
    key = target(settings)
    worker_a.reads.get(key)
    make_stale(worker_a, raw, key)
    db.gate = threading.Event()
    worker_b.reads.get(key)  # B's refresh holds the lease, blocked in its query
    assert db.started.acquire(timeout=5)
    for _ in range(50):
        assert worker_a.reads.get(key).result == STALE
    wait_until(lambda: worker_a.jobs.pending() == 0, 5, interval=0.01, message="A idle")
    assert not worker_a.jobs.claim(key.key)  # A remembers the lease held elsewhere
    db.gate.set()
    wait_until(
        lambda: worker_a.reads.get(key).result in (HIT, "HIT"),
        5,
        interval=0.01,
        message="B's refresh to land",
    )
    assert db.calls["version"] == 2


def test_a_failed_refresh_keeps_serving_stale_and_is_not_cached(settings, db, services, raw):
    service = services(settings, db, cache_strategy="swr")
    key = target(settings)
    service.reads.get(key)
    make_stale(service, raw, key)
    db.fail = True
    before = counter(metrics.REFRESHES[("stale", "error")])
    assert service.reads.get(key).result == STALE
    wait_until(
        lambda: counter(metrics.REFRESHES[("stale", "error")]) > before,
        5,
        interval=0.01,
        message="the refresh to fail",
    )
    service.jobs.forget([key.key])
    assert service.reads.get(key).result == STALE  # still the stale value, never an error
    db.fail = False
    wait_until(lambda: service.reads.get(key).result == HIT, 5, interval=0.01, message="recovered")


def test_xfetch_refreshes_early_with_its_probability(settings, db, services):
    class Certain(random.Random):
        def random(self):
            return 0.999999  # -ln(1 - u) is large: always due

    service = services(settings, db, rng=Certain(), cache_strategy="swr", xfetch_beta=1.0)
    key = target(settings)
    db.delay = 0.05  # delta: -ln(1e-6) * 0.05 s = 0.7 s of lead
    service.reads.get(key)
    db.delay = 0.0
    read = service.store.read(key.key)
    service.store.client.pexpire(key.key, int((read.entry.grace + 0.4) * 1000))  # 0.4 s left
    before = counter(metrics.REFRESHES[("early", "ok")])
    lookup = service.reads.get(key)
    assert lookup.result == HIT
    wait_until(
        lambda: counter(metrics.REFRESHES[("early", "ok")]) == before + 1,
        5,
        interval=0.01,
        message="an early refresh",
    )


def test_a_worker_runs_at_most_refresh_threads_refreshes_at_once(settings, db, services, raw):
    service = services(settings, db, cache_strategy="swr", refresh_threads=2)
    keys = [target(settings, item) for item in range(1, 7)]
    for key in keys:
        service.reads.get(key)
        make_stale(service, raw, key)
    db.delay = 0.2
    assert all(service.reads.get(key).result == STALE for key in keys)
    wait_until(lambda: db.calls["version"] == 12, 10, interval=0.02, message="6 refreshes")
    assert db.max_concurrent == 2


def test_shutdown_drops_the_queued_refreshes():
    """Defect: an exiting worker ran its whole refresh queue."""
    refresher = BackgroundJobs(1, 10, time.monotonic)
    gate, ran = threading.Event(), []

    def refresh(n: int) -> None:
        gate.wait(5)
        ran.append(n)

    for n in range(5):
        assert refresher.claim(f"k{n}")
        refresher.submit(f"k{n}", partial(refresh, n))
    wait_until(lambda: refresher.pending() == 5, 2, interval=0.01, message="queued")
    refresher.shutdown()
    gate.set()
    refresher._executor.shutdown(wait=True)
    assert ran == [0]
    assert not refresher.claim("k9")


def test_freshness_does_not_depend_on_the_readers_wall_clock(settings, db, services):
    """Defect: soft expiry compared the writer's wall clock with the reader's."""
    writer = services(settings, db)
    reader = services(settings, db, wall=lambda: time.time() + 3600, cache_strategy="swr")
    writer.reads.get(target(settings))
    assert reader.reads.get(target(settings)).result == HIT


# -- Redis trouble -------------------------------------------------------------------
def test_redis_data_loss_is_answered_from_the_workers_copy(settings, db, services, restart_empty):
    """Defect: after a Redis restart the first reader of every key waited for the
    query although every worker still held the entry."""
    service = services(settings, db)
    key = target(settings)
    service.reads.get(key)
    service.reads.get(key)  # a read confirms this worker's copy (its own fill invalidated it)
    restart_empty(service)  # killed (nothing saved), started again on the same port
    lookup = service.reads.get(key)

    assert lookup.detail == "reseeded" and lookup.result == HIT
    assert db.calls["version"] == 1
    assert service.store.read(key.key).entry is not None  # written back


def test_a_purge_is_never_undone_by_a_workers_copy(settings, db, services, raw):
    service = services(settings, db)
    key = target(settings)
    service.reads.get(key)
    service.reads.get(key)
    raw.unlink(key.key)
    wait_until(
        lambda: not service.tier1.last_copy(key.key).valid,
        2,
        interval=0.01,
        message="the delete to reach the listener",
    )
    assert service.reads.get(key).result == MISS and db.calls["version"] == 2


def test_redis_down_serves_the_copy_until_its_hard_expiry_then_queries(
    settings, db, worker_without_redis
):
    clock = FakeClock()
    service = worker_without_redis(clock)
    key = target(settings)
    first = service.reads.get(key)  # Redis unreachable: queried, kept as this worker's copy
    assert (first.result, first.tier, first.detail) == (BYPASS, DATABASE, "redis-unavailable")
    assert service.reads.get(key).tier == LOCAL
    db.fail = True  # PostgreSQL is down too: nothing refreshes the copy
    clock.advance(14.9)  # ttl 10 + grace 5
    stale = service.reads.get(key)
    assert stale.tier == LOCAL and stale.ttl_remaining < 0
    clock.advance(0.2)  # past the hard expiry: the copy is never served longer
    with pytest.raises(DatabaseUnavailable):
        service.reads.get(key)


def test_a_read_without_redis_and_a_fill_that_loses_it_run_one_query(
    settings, db, services, monkeypatch
):
    """The degraded path shares the key's flight: a request without Redis
    follows the fill in flight, and when that fill loses Redis too, the two
    (the follower, the leader now degraded) end in one flight and one query."""
    service = services(settings, db)
    key = target(settings)
    lease_asked, lease_fails = threading.Event(), threading.Event()

    def acquire(*args, **kwargs):  # Redis fails mid-fill, at the lease
        lease_asked.set()
        assert lease_fails.wait(10)
        raise CacheUnavailable("redis timeout (simulated)")

    monkeypatch.setattr(service.store, "acquire", acquire)
    flights = service.fills.flights
    joined: list[str] = []  # who joined the key's flights, as what

    def join(key: str):
        flight = real_join(key)
        joined.append("leads" if flight.leader else "follows")
        return flight

    real_join = flights.join
    monkeypatch.setattr(flights, "join", join)
    db.gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        try:
            leading = pool.submit(service.reads.get, key)
            assert lease_asked.wait(5)
            following = pool.submit(service.fills.fill_locally, key, Timer())
            wait_until(lambda: len(joined) == 2, 5, interval=0.01, message="a follower")
            lease_fails.set()
            wait_until(lambda: len(joined) == 4, 5, interval=0.01, message="both to join again")
        finally:
            lease_fails.set()
            db.gate.set()
        answer, filled = leading.result(timeout=10), following.result(timeout=10)
    assert sorted(joined[2:]) == ["follows", "leads"], joined
    assert (answer.result, answer.detail) == (BYPASS, "redis-unavailable")
    assert filled.tier == DATABASE and filled.entry.value == answer.entry.value
    assert db.calls["version"] == 1, (db.calls, answer, filled)


# -- the bulkhead ----------------------------------------------------------------------
def test_misses_beyond_the_fill_slots_are_refused_at_once(settings, db, services):
    service = services(settings, db, fill_slots=2, miss_slots=4)
    db.gate = threading.Event()
    cached = target(settings, 99)
    db.gate.set()
    service.reads.get(cached)
    db.gate = threading.Event()
    outcomes: list[str] = []

    def cold(item):
        try:
            service.reads.get(target(settings, item))
            outcomes.append("ok")
        except Overloaded:
            outcomes.append("overloaded")

    threads = [threading.Thread(target=cold, args=(item,)) for item in range(1, 7)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: outcomes.count("overloaded") == 4, 5, interval=0.01, message="4 of 6 refused"
    )
    started = time.perf_counter()
    assert service.reads.get(cached).result == HIT  # hits do not wait behind the misses
    assert time.perf_counter() - started < 0.1
    db.gate.set()
    for thread in threads:
        thread.join(5)
    assert outcomes.count("ok") == 2 and db.max_concurrent <= 2


def test_followers_of_one_cold_key_have_slots_of_their_own(settings, db, services):
    """Defect: followers of an in-flight fill counted against the miss slots, so
    some of 100 users of one cold key got 503 although one query served them all."""
    service = services(settings, db, fill_slots=1, miss_slots=1, follower_slots=8)
    db.gate = threading.Event()
    outcomes: list[str] = []

    def same_key():
        outcomes.append(_outcome(lambda: service.reads.get(target(settings, 5))))

    threads = [threading.Thread(target=same_key) for _ in range(9)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: service.fills.flights.followers(target(settings, 5).key) == 8,
        5,
        interval=0.01,
        message="8 followers",
    )
    assert _outcome(lambda: service.reads.get(target(settings, 6))) == "Overloaded"  # a 2nd key
    db.gate.set()
    for thread in threads:
        thread.join(5)
    assert outcomes == ["ok"] * 9 and db.calls["version"] == 1


def test_followers_beyond_their_slots_are_refused(settings, db, services):
    service = services(settings, db, fill_slots=1, miss_slots=1, follower_slots=2)
    db.gate = threading.Event()
    outcomes: list[str] = []

    def same_key():
        outcomes.append(_outcome(lambda: service.reads.get(target(settings, 5))))

    threads = [threading.Thread(target=same_key) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: outcomes.count("Overloaded") == 2, 5, interval=0.01, message="refused")
    db.gate.set()
    for thread in threads:
        thread.join(5)
    assert outcomes.count("ok") == 3 and db.calls["version"] == 1


def test_the_uncached_baseline_runs_in_fill_slots(settings, db, services):
    service = services(settings, db, fill_slots=1)
    db.gate = threading.Event()
    thread = threading.Thread(
        target=service.reads.get, args=(target(settings),), kwargs={"bypass": True}
    )
    thread.start()
    assert db.started.acquire(timeout=5)
    with pytest.raises(Overloaded):
        service.reads.get(target(settings), bypass=True)
    db.gate.set()
    thread.join(5)


def test_during_an_outage_a_worker_refreshes_its_copy_once_per_ttl(settings, db, services, valkey):
    """A copy read from Redis before the outage has a fence; the copy refreshed
    from the database during it has none, and must still replace it (else the
    worker queried again on every read of the stale copy)."""
    clock = FakeClock()
    service = services(settings, db, clock=clock, cache_grace_seconds=30)
    key = target(settings)
    service.reads.get(key)
    service.reads.get(key)  # confirmed from Redis: a fenced copy
    valkey.terminate()  # Redis is gone
    try:
        clock.advance(10.5)  # past the soft expiry
        assert service.reads.get(key).tier == LOCAL  # the stale copy at once, one refresh behind it
        wait_until(lambda: db.calls["version"] == 2, 5, interval=0.01, message="the refresh")
        wait_until(lambda: service.jobs.pending() == 0, 5, interval=0.01, message="done")
        for _ in range(20):
            lookup = service.reads.get(key)
            assert lookup.tier == LOCAL and lookup.ttl_remaining > 0
        assert db.calls["version"] == 2
    finally:
        valkey.start()


def test_a_request_after_a_write_never_takes_a_fill_that_read_before_it(settings, db, services):
    """Read-your-writes across a single flight: a fill that read version 1 is
    in flight when a delete-mode write commits version 2; a read that joins the
    flight after the write must not get version 1 (found by the staleness
    benchmark: 1 violation in 52)."""
    service = services(settings, db)
    item = item_target(settings.cache_namespace, 3, "delete")
    leader_gate = db.gate = threading.Event()
    seen: dict[str, int] = {}

    def read(name: str) -> None:
        seen[name] = service.reads.get(item).value["version"]

    leader = threading.Thread(target=read, args=("leader",))
    leader.start()
    assert db.started.acquire(timeout=5)  # the fill has read version 1 and is held
    db.gate = None  # queries started from now on answer at once
    written = service.writer.put(3, "new", "delete", guarded=True)
    assert written.item["version"] == 2 and written.action == "tombstone"
    follower = threading.Thread(target=read, args=("follower",))
    follower.start()
    wait_until(
        lambda: service.fills.flights.followers(item.key) == 1,
        5,
        interval=0.01,
        message="the follower joined the flight",
    )
    leader_gate.set()
    leader.join(5)
    follower.join(5)
    assert seen == {"leader": 1, "follower": 2}


def test_a_cached_key_keeps_answering_while_redis_is_only_slow(settings, db, services, raw):
    """Defect: during a flood of cold misses on a saturated machine, Redis answered
    later than its 75 ms timeout, the breaker opened, and a worker without its
    own copy of a cached key needed a miss slot that the flood held (503s). With
    no copy to fall back on, the read asks Redis once more, patiently."""
    filler = services(settings, db)
    other = services(
        settings,
        db,
        redis_socket_timeout_ms=50,
        breaker_failure_threshold=1,
        redis_retry_timeout_ms=2000,
        fill_slots=1,
        miss_slots=1,
    )
    key = target(settings, 11)
    filler.reads.get(key)  # cached in Redis; `other` has no copy of it
    with other.bulkhead.miss():  # the flood holds every miss slot of this worker
        # Redis answers late: longer than the 50 ms timeout even for a test
        # thread descheduled on a loaded machine, shorter than the patient 2 s.
        raw.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        lookup = other.reads.get(key)
    assert (lookup.result, lookup.tier) == (HIT, "redis")
    assert other.store.breaker.state in ("open", "half-open")  # the first try did time out
    assert db.calls["version"] == 1


def test_an_evicted_tombstone_lets_no_old_fill_through(settings, db, services, raw):
    """Defect: volatile-lru evicts a tombstone (an ordinary key with a TTL); a fill
    that read the old row was then accepted, and the old version served until
    its TTL. The fill re-checks the row's version before it writes."""
    service = services(settings, db)
    item = item_target(settings.cache_namespace, 4, "delete")
    db.gate = threading.Event()
    reader = threading.Thread(target=service.reads.get, args=(item,))
    reader.start()
    assert db.started.acquire(timeout=5)  # the fill has read version 1
    written = service.writer.put(4, "new", "delete", guarded=True)
    assert written.action == "tombstone"
    raw.delete(item.key)  # evicted under memory pressure, as volatile-lru may
    db.gate.set()
    reader.join(5)
    db.gate = None
    assert service.store.read(item.key).entry is None  # the old fill was not stored
    assert service.reads.get(item).value["version"] == written.item["version"] == 2


def test_refreshes_beyond_the_pool_and_its_queue_are_refused_not_queued(
    settings, db, services, raw
):
    """Suspected defect, confirmed: the refresh pool's queue was unbounded, so a
    worker whose keys all went stale at once queued a refresh per key."""
    service = services(settings, db, cache_strategy="swr", refresh_threads=1, refresh_queue=2)
    keys = [target(settings, item) for item in range(20, 30)]
    for key in keys:
        service.reads.get(key)
        make_stale(service, raw, key)
    db.gate = threading.Event()
    assert all(service.reads.get(key).result == STALE for key in keys)  # served at once
    assert service.jobs.pending() == 3 and service.jobs.refused == 7
    db.gate.set()
    wait_until(lambda: service.jobs.pending() == 0, 5, interval=0.01, message="drained")
    assert db.calls["version"] == 10 + 3


def test_a_refresh_whose_write_lost_to_a_newer_one_is_counted_as_superseded(
    settings, db, services, raw
):
    """Suspected defect, confirmed: a refresh counted a refused write as ok."""
    service = services(settings, db, cache_strategy="swr")
    item = item_target(settings.cache_namespace, 6, "write-through")
    service.reads.get(item)
    make_stale(service, raw, item)
    seen = service.store.read(item.key).entry
    before = counter(metrics.REFRESHES[("stale", "superseded")])
    db.gate, db.started = threading.Event(), threading.Semaphore(0)
    refresh = threading.Thread(target=service.fills._refresh, args=(item, seen, "stale"))
    refresh.start()
    assert db.started.acquire(timeout=5)  # the refresh has read version 1
    service.writer.put(6, "newer", "write-through", guarded=True)  # version 2 is in Redis
    db.gate.set()
    refresh.join(5)
    assert counter(metrics.REFRESHES[("stale", "superseded")]) == before + 1
    assert service.store.read(item.key).entry.version == 2
