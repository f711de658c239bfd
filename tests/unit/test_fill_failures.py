"""What a fill does when one of its collaborators fails mid-way (fills.py).

Each failure has one documented outcome: the reader still gets the row, the
cache keeps nothing it cannot vouch for, and a background job that fails is
counted and logged, never lost. The failures are injected on the store or the
source of a real engine on a real Valkey (the fake database of fakes.py).
"""

from __future__ import annotations

import logging

from cachelab import metrics
from cachelab.engine.keys import item_target
from cachelab.engine.model import DATABASE, Timer
from cachelab.postgres.database import DatabaseUnavailable
from tests.unit.fakes import counter, unavailable

ITEM = 3


def test_a_fill_whose_write_redis_refuses_still_answers_and_keeps_only_an_unconfirmed_copy(
    settings, db, services, monkeypatch
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    monkeypatch.setattr(service.store, "write", unavailable)
    answer = service.reads.get(key)
    assert (answer.value["id"], answer.tier, answer.superseded) == (ITEM, DATABASE, False)
    monkeypatch.undo()
    assert service.store.read(key.key).entry is None
    # Kept, for the next outage, but not confirmed by Redis: never served as a hit.
    copy = service.tier1.last_copy(key.key)
    assert copy is not None and not copy.confirmed
    assert service.tier1.servable(key.key, True) is None


def test_a_row_that_changed_under_a_stored_fill_is_buried_and_a_failed_burial_is_logged(
    settings, db, services, monkeypatch, caplog
):
    """The row's check after the write says a commit landed: the fill puts a
    tombstone over what it wrote. If Redis cannot take it, the entry ages out by
    its TTL, and the log says so."""
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    write = service.store.write

    def write_then_commit(*args, **kwargs):
        stored = write(*args, **kwargs)
        db.update_item(ITEM, "committed meanwhile")
        return stored

    monkeypatch.setattr(service.store, "write", write_then_commit)
    before = counter(metrics.FILLS_SUPERSEDED["row-changed"])
    answer = service.reads.get(key)
    assert answer.superseded and answer.value["version"] == 1
    assert counter(metrics.FILLS_SUPERSEDED["row-changed"]) == before + 1
    left = service.store.read(key.key).entry
    assert left.tombstone and left.version == 2

    other = item_target(settings.cache_namespace, ITEM + 1, "delete")
    write_other = service.store.write

    def write_then_commit_other(*args, **kwargs):
        stored = write_other(*args, **kwargs)
        db.update_item(ITEM + 1, "committed meanwhile")
        return stored

    monkeypatch.setattr(service.store, "write", write_then_commit_other)
    monkeypatch.setattr(service.store, "bury", unavailable)
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        assert service.reads.get(other).superseded
    (record,) = [r for r in caplog.records if r.getMessage() == "a superseded fill stayed"]
    assert record.key == other.key
    assert record.reason == "injected: Redis did not answer"


def test_a_database_that_cannot_say_whether_the_row_changed_keeps_the_fill(
    settings, db, services, monkeypatch
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")

    def cannot_say(_item_id):
        raise DatabaseUnavailable("injected: the version lookup failed")

    monkeypatch.setattr(db, "item_version", cannot_say)
    answer = service.reads.get(key)
    assert not answer.superseded
    assert service.store.read(key.key).entry.version == 1


def test_a_renewal_redis_cannot_answer_keeps_the_lease_for_the_next_round(
    settings, db, services, monkeypatch
):
    service = services(settings, db)
    service.fills._stopped = True  # no keeper thread: the test runs the rounds
    lease = service.fills._try_acquire(item_target(settings.cache_namespace, ITEM, "delete"))
    monkeypatch.setattr(service.store, "extend", unavailable)
    service.fills.renew_all()
    assert not lease.lost and service.fills.held() == [lease]
    monkeypatch.undo()
    service.fills.renew_all()
    assert not lease.lost
    service.fills._release(lease)
    assert service.fills.held() == []


def test_a_background_refresh_that_crashes_is_counted_logged_and_releases_its_lease(
    settings, db, services, monkeypatch, caplog
):
    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    seen = service.reads.get(key)
    entry = service.store.read(key.key).entry

    def crash(*_args, **_kwargs):
        raise RuntimeError("injected: a bug")

    monkeypatch.setattr(service.fills, "_query", crash)
    before = counter(metrics.REFRESHES[("early", "error")])
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        service.fills._refresh(key, entry, "early")
    assert counter(metrics.REFRESHES[("early", "error")]) == before + 1
    assert any("background refresh crashed" in r.getMessage() for r in caplog.records)
    assert service.fills.held() == []  # the lease went back
    assert service.store.read(key.key).entry == entry and seen.value["version"] == 1


def test_a_fill_that_loses_redis_twice_while_following_queries_alone(
    settings, db, services, monkeypatch
):
    """Degraded (Redis down), reads of one key share one query per worker; a
    follower whose flight ended without an answer joins the next one, and past
    a second loss it queries alone, in a miss slot."""
    from cachelab.engine import fills as fills_module

    service = services(settings, db)
    key = item_target(settings.cache_namespace, ITEM, "delete")
    flights = []

    def lost(flight_set, target, lead, timer):
        flights.append(target.key)
        raise fills_module.RedisDown()

    monkeypatch.setattr(service.fills, "_flight", lost)
    filled = service.fills.fill_locally(key, Timer())
    assert flights == [key.key, key.key]
    assert filled.entry.value["id"] == ITEM and db.calls["item"] == 1
