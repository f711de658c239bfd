"""A fill's background work, as operators see it (fills.py): refreshes, local
refreshes and lease renewals, each counted by outcome and logged with the key
and the reason, and a waiter's answer taken from Redis.

Written from mutmut's survivors of ``fills.py``: each test pins down what one
of them changed (an outcome's label, a log record's fields, the patience of a
renewal, the copy a waiter keeps).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cachelab import metrics
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.model import new_entry
from cachelab.engine.store import CacheUnavailable
from cachelab.postgres.database import DatabaseUnavailable
from loadtest.stack import wait_until
from tests.unit.fakes import FakeClock, counter, redis_now_ms, set_lease, unavailable

ITEM = 4


def the_record(caplog, message: str) -> logging.LogRecord:
    """The one record with exactly this message (structured fields as attributes)."""
    records = [r for r in caplog.records if r.getMessage() == message]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    return records[0]


def lease_ms_left(raw, lease_key: str) -> int:
    return int(raw.get(lease_key).split()[1]) - redis_now_ms(raw)


# -- background refreshes ---------------------------------------------------------------
def test_a_refresh_that_finds_the_lease_taken_is_skipped_and_counted(settings, db, services, raw):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    service.reads.get(key)
    seen = service.store.read(key.key).entry
    set_lease(raw, key.lease_key, "another-process", 5000)
    before = counter(metrics.REFRESHES[("stale", "skipped")])
    service.fills._refresh(key, seen, "stale")
    assert counter(metrics.REFRESHES[("stale", "skipped")]) == before + 1
    assert db.calls["item"] == 1


def test_a_refresh_whose_write_redis_refuses_is_an_error_not_ok(
    settings, db, services, monkeypatch
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    service.reads.get(key)
    seen = service.store.read(key.key).entry
    service.store.delete(key.key)  # gone: the refresh queries
    monkeypatch.setattr(service.store, "write", unavailable)
    ok, error = (counter(metrics.REFRESHES[("early", o)]) for o in ("ok", "error"))
    service.fills._refresh(key, seen, "early")
    assert counter(metrics.REFRESHES[("early", "error")]) == error + 1
    assert counter(metrics.REFRESHES[("early", "ok")]) == ok
    assert db.calls["item"] == 2


def test_a_refresh_after_another_process_refreshed_it_does_not_query(settings, db, services):
    """Already fresh, even with less than a second of freshness left."""
    service = services(settings, db)
    key = version_target(settings.cache_namespace, 1)
    service.reads.get(key)
    seen = service.store.read(key.key).entry
    newer = new_entry(service.fills.source.load(key), seen.fence + 100, 0.5, 60.0, seen.created + 1)
    assert service.store.write(key.key, newer, newer.px)
    before = counter(metrics.REFRESHES[("stale", "already-fresh")])
    service.fills._refresh(key, seen, "stale")
    assert counter(metrics.REFRESHES[("stale", "already-fresh")]) == before + 1
    assert db.calls["version"] == 2  # the first read, and the load that made ``newer``


def test_a_failed_refresh_is_logged_with_its_key_and_reason(settings, db, services, caplog):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    service.reads.get(key)
    seen = service.store.read(key.key).entry
    service.store.delete(key.key)
    reason = "injected: " + "x" * 300  # the reason is cut at 200 characters

    def fail(_item_id):
        raise DatabaseUnavailable(reason)

    db.fetch_item = fail
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        service.fills._refresh(key, seen, "stale")
    record = the_record(caplog, "background refresh failed")
    assert (record.key, record.reason) == (key.key, reason[:200])  # type: ignore[attr-defined]


def test_a_crashed_refresh_is_logged_with_its_key_and_traceback(
    settings, db, services, caplog, monkeypatch
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    service.reads.get(key)
    seen = service.store.read(key.key).entry

    def crash(*_args, **_kwargs):
        raise RuntimeError("injected: a bug")

    monkeypatch.setattr(service.fills, "_query", crash)
    service.store.delete(key.key)
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        service.fills._refresh(key, seen, "stale")
    record = the_record(caplog, "background refresh crashed")
    assert record.key == key.key and record.exc_info is not None  # type: ignore[attr-defined]


# -- local refreshes (Redis down) -------------------------------------------------------
def test_a_local_refresh_is_counted_ok_and_keeps_an_unconfirmed_copy(
    settings, db, worker_without_redis
):
    service = worker_without_redis(FakeClock())
    key = item_target(settings.cache_namespace, ITEM, "delete")
    before = counter(metrics.REFRESHES[("stale", "ok")])
    service.fills._refresh_locally(key)
    assert counter(metrics.REFRESHES[("stale", "ok")]) == before + 1
    copy = service.tier1.last_copy(key.key)
    assert copy is not None and not copy.confirmed and copy.entry.value["id"] == ITEM


def test_local_refreshes_of_two_keys_run_side_by_side(settings, db, worker_without_redis):
    service = worker_without_redis(FakeClock())
    first, second = (item_target(settings.cache_namespace, i, "delete") for i in (1, 2))
    db.gate = threading.Event()
    try:
        service.fills.refresh_locally_in_background(first)
        service.fills.refresh_locally_in_background(second)
        service.fills.refresh_locally_in_background(first)  # already running: not again
        for _ in range(2):
            assert db.started.acquire(timeout=5), "both keys' refreshes start"
    finally:
        db.gate.set()
    wait_until(lambda: db.concurrent == 0, 5, interval=0.01, message="the refreshes to end")
    assert db.calls["item"] == 2


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (DatabaseUnavailable("injected: database down"), "local refresh failed"),
        (RuntimeError("injected: a bug"), "local refresh crashed"),
    ],
)
def test_a_failed_local_refresh_is_counted_and_logged_with_its_key(
    settings, db, services, monkeypatch, caplog, failure, message
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")

    def fail(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(service.fills, "_query", fail)
    before = counter(metrics.REFRESHES[("stale", "error")])
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        service.fills._refresh_locally(key)
    assert counter(metrics.REFRESHES[("stale", "error")]) == before + 1
    assert service.tier1.last_copy(key.key) is None
    record = the_record(caplog, message)
    assert record.key == key.key  # type: ignore[attr-defined]
    if isinstance(failure, DatabaseUnavailable):
        assert record.reason == str(failure)  # type: ignore[attr-defined]
    else:
        assert record.exc_info is not None


# -- lease renewals ---------------------------------------------------------------------
def held_lease(service, item: int = ITEM):
    service.fills._stopped = True  # no keeper thread: the test runs the rounds
    target = item_target(service.settings.cache_namespace, item, "delete")
    return service.fills._try_acquire(target)


def test_a_renewal_passes_the_open_breaker(settings, db, services, raw):
    """Renewals are patient: the request breaker being open (Redis slow for
    requests) must not let a live holder's lease lapse."""
    service = services(settings, db, breaker_failure_threshold=1, breaker_cooldown_seconds=60)
    lease = held_lease(service)
    set_lease(raw, lease.lease_key, lease.token, 100)
    with pytest.raises(RuntimeError), service.store.breaker.guard((RuntimeError,)):
        raise RuntimeError("injected: one failure opens it")
    assert service.store.breaker.state == "open"
    service.fills.renew_all()
    assert lease_ms_left(raw, lease.lease_key) > 300 and not lease.lost


def test_one_lease_redis_cannot_renew_does_not_stop_the_others(
    settings, db, services, raw, monkeypatch
):
    service = services(settings, db)
    first, second = held_lease(service, 1), held_lease(service, 2)
    set_lease(raw, second.lease_key, second.token, 100)
    extend = service.store.extend

    def first_unanswered(lease_key, *args, **kwargs):
        if lease_key == first.lease_key:
            raise CacheUnavailable("injected: no answer")
        return extend(lease_key, *args, **kwargs)

    monkeypatch.setattr(service.store, "extend", first_unanswered)
    service.fills.renew_all()
    assert lease_ms_left(raw, second.lease_key) > 300
    assert not first.lost and not second.lost


def test_a_lease_refused_renewal_is_lost_forgotten_and_logged(
    settings, db, services, raw, caplog, monkeypatch
):
    service = services(settings, db)
    lease = held_lease(service)
    raw.delete(lease.lease_key)  # it lapsed (or was evicted)
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        service.fills.renew_all()
    assert lease.lost and service.fills.held() == []
    assert the_record(caplog, "fill lease lost").lock == lease.lease_key  # type: ignore[attr-defined]
    # Released meanwhile (its holder finished) while the refusal was in flight: no error.
    other = held_lease(service, ITEM + 1)
    extend = service.store.extend

    def released_meanwhile(*args, **kwargs):
        service.fills._release(other)
        return False

    monkeypatch.setattr(service.store, "extend", released_meanwhile)
    service.fills.renew_all()
    assert other.lost and service.fills.held() == []
    monkeypatch.setattr(service.store, "extend", extend)


# -- a waiter's answer from Redis -------------------------------------------------------
def test_a_waiter_keeps_the_copy_redis_gave_it_until_the_entry_s_own_expiry(settings, db, services):
    filler, waiter = services(settings, db), services(settings, db)
    key = version_target(settings.cache_namespace, 3)
    filler.reads.get(key)
    read = waiter.store.read(key.key)
    snapshot = waiter.tier1.snapshot(key.key)
    now = waiter.fills.clock()
    filled = waiter.fills._from_redis(key, read, snapshot, now)
    assert filled.detail == "collapsed" and filled.ttl_remaining == read.soft_remaining
    copy = waiter.tier1.last_copy(key.key)
    assert copy is not None and filled.copy is copy
    assert copy.hard_deadline - now == pytest.approx(read.pttl_ms / 1000, abs=0.03)


# -- a fill overtaken by a commit ---------------------------------------------------------
def test_a_not_found_fill_overtaken_by_an_insert_is_buried_at_the_row_s_first_version(
    settings, db, services, monkeypatch
):
    """The tombstone goes one version above what the fill read; for a "not
    found", that is version 1, so the inserted row's own fill is accepted."""
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    row = db.items.pop(ITEM)  # absent, inside the table's range
    write = service.store.write

    def write_then_insert(*args, **kwargs):
        stored = write(*args, **kwargs)
        db.items[ITEM] = row  # an INSERT commits right after the fill's write
        return stored

    monkeypatch.setattr(service.store, "write", write_then_insert)
    assert service.reads.get(key).superseded
    left = service.store.read(key.key).entry
    assert left.tombstone and left.version == 1
    monkeypatch.setattr(service.store, "write", write)
    assert service.reads.get(key).value["version"] == 1
    assert service.store.read(key.key).entry.version == 1  # the row's fill was accepted


# -- cache-aside ------------------------------------------------------------------------
@pytest.mark.parametrize("guarded", [True, False])
def test_a_cache_aside_fill_is_read_back_as_a_hit(settings, db, services, guarded):
    """Guarded or not (``guard=off`` writes with a plain SET), the entry a
    cache-aside miss stores is one the next read can use."""
    service = services(settings, db, cache_strategy="cache-aside")
    key = item_target(settings.cache_namespace, ITEM, "delete", guarded)
    assert service.reads.get(key).result == "MISS"
    again = service.reads.get(key)
    assert (again.result, again.tier) == ("HIT", "redis") and db.calls["item"] == 1
    assert service.store.read(key.key).entry.fence >= (1 if guarded else 0)


def test_followers_of_a_lease_taken_after_another_worker_filled_the_key_get_its_entry(
    settings, db, services, raw, monkeypatch
):
    """Worker B's leader waits on A's lease; A fills and releases; B's leader
    then takes the free lease and finds the entry there ("the previous holder
    filled it"). Its followers share that answer, which says when it was read
    (after they began): no second flight, no second query."""
    worker_a, worker_b = services(settings, db), services(settings, db)
    key = version_target(settings.cache_namespace, 5)
    flights = worker_b.fills.flights
    acquire, attempts = worker_b.fills._try_acquire, []

    def once_a_released_it(*args, **kwargs):
        attempts.append(args)
        if len(attempts) > 1:  # B's retry: A has filled the key and let the lease go
            wait_until(lambda: raw.get(key.lease_key) is None, 5, interval=0.005, message="A")
        return acquire(*args, **kwargs)

    monkeypatch.setattr(worker_b.fills, "_try_acquire", once_a_released_it)
    db.gate = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        try:
            holder = pool.submit(worker_a.reads.get, key)
            assert db.started.acquire(timeout=5), "A's query starts"
            leader = pool.submit(worker_b.reads.get, key)
            wait_until(lambda: flights.in_flight(key.key), 5, interval=0.01, message="B's flight")
            follower = pool.submit(worker_b.reads.get, key)
            wait_until(
                lambda: flights.followers(key.key) == 1, 5, interval=0.01, message="a follower"
            )
        finally:
            db.gate.set()
        answers = [f.result(timeout=10) for f in (holder, leader, follower)]
    assert [a.value for a in answers] == [answers[0].value] * 3
    assert answers[2].detail == "collapsed" and db.calls["version"] == 1
    assert len(attempts) == 2  # B's leader took the free lease and found the entry
