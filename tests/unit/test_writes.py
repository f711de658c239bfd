"""What a write leaves in the cache, mode by mode, and what it answers.

The writer commits, then tells the cache (writes.py): ``delete`` writes a
tombstone carrying the committed version, ``write-through`` the new entry,
``ttl`` nothing, ``notify`` leaves it to the trigger's listener; the
unguarded variants (``guard=off``) use a plain delete and a plain write. Its
answer names what the cache got (``WriteResult.action``), and a write that
finds something newer in Redis or in the database keeps that (``kept-newer``).
"""

from __future__ import annotations

import logging
import time

import pytest

from cachelab.engine.keys import item_target
from cachelab.engine.model import MEMORY, REDIS, Loaded, NotFound, new_entry, tombstone
from cachelab.engine.store import CacheUnavailable
from loadtest.stack import wait_until

ITEM = 5


def cached_version_1(service, mode: str, guarded: bool = True):
    """Item 5 read once in ``mode``: version 1 in Redis and in the worker's memory."""
    key = item_target(service.settings.cache_namespace, ITEM, mode, guarded)
    assert service.reads.get(key).value["version"] == 1
    assert service.store.read(key.key).entry.version == 1
    return key


@pytest.mark.parametrize(
    ("mode", "guarded", "action"),
    [
        ("delete", True, "tombstone"),
        ("delete", False, "deleted"),
        ("write-through", True, "written"),
        ("write-through", False, "written"),
        ("ttl", True, "none"),
        ("notify", True, "notify"),
    ],
)
def test_each_mode_leaves_its_documented_mark(settings, db, services, raw, mode, guarded, action):
    service = services(settings, db, cache_jitter_ratio=0.5)
    key = cached_version_1(service, mode, guarded)
    fence_before = raw.get(key.fence_key)
    written = service.writer.put(ITEM, "new", mode, guarded)
    assert (written.item["version"], written.action) == (2, action)
    left = service.store.read(key.key).entry
    if action == "tombstone":
        assert left.tombstone and left.version == 2
        assert int(raw.get(key.fence_key)) > int(fence_before)  # it outranks every older fill
    elif action == "deleted":
        assert left is None and raw.exists(key.key) == 0
    elif action == "written":
        assert (left.version, left.value["payload"]) == (2, "new")
        # Jittered like a fill: up to CACHE_JITTER_RATIO shorter, never longer.
        ttl = settings.cache_ttl_seconds
        assert ttl * 0.5 <= left.ttl < ttl and left.grace == settings.cache_grace_seconds
        if guarded:
            assert left.fence == int(raw.get(key.fence_key)) > int(fence_before)
        else:  # a plain SET: no fence taken, none needed
            assert left.fence == 0 and raw.get(key.fence_key) == fence_before
    else:  # ttl and notify: this request leaves Redis as it was
        assert left.version == 1


@pytest.mark.parametrize(
    ("mode", "settled"),
    [("delete", True), ("write-through", True), ("ttl", False), ("notify", False)],
)
def test_a_write_that_promises_read_your_writes_answers_after_one_more_round_trip(
    settings, db, services, monkeypatch, mode, settled
):
    """A server sends a write's reply and the tracking invalidations it caused in one pass of
    its event loop, the writer's reply possibly first: until a later command is answered,
    another worker may not have them yet, and a GET there right after the PUT would get its
    old copy. The modes that promise read-your-writes take that round trip last."""
    service = services(settings, db)
    key = cached_version_1(service, mode)
    calls: list[str] = []

    def spy(name: str):
        real = getattr(service.store, name)

        def recorded(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return recorded

    for name in ("write", "bury", "settle"):
        monkeypatch.setattr(service.store, name, spy(name))
    service.writer.put(ITEM, "new", mode, guarded=True)
    assert (calls[-1:] == ["settle"]) is settled, calls
    assert calls.count("settle") == settled
    assert not settled or service.store.read(key.key).entry.version == 2


def test_the_writers_own_copy_is_dropped_when_it_returns(settings, db, services):
    """In ``ttl`` mode Redis keeps version 1 (no invalidation reaches the
    worker), but the writing worker's own copy goes: its next read asks Redis."""
    service = services(settings, db)
    key = cached_version_1(service, "ttl")
    wait_until(lambda: service.reads.get(key).tier == MEMORY, 5, 0.01, "a copy in memory")
    service.writer.put(ITEM, "new", "ttl", guarded=True)
    after = service.reads.get(key)
    assert (after.tier, after.value["version"]) == (REDIS, 1)


@pytest.mark.parametrize("mode", ["delete", "write-through"])
def test_a_newer_entry_already_in_redis_is_kept(settings, db, services, mode):
    """A later write's mark landed first (two PUTs racing): this write's older
    one is refused, and the answer says so."""
    service = services(settings, db)
    key = cached_version_1(service, mode)
    fence = service.store.next_fence(key.fence_key)
    newer = (
        tombstone(9, fence, time.time())
        if mode == "delete"
        else new_entry(Loaded({"id": ITEM, "version": 9}, 9, 0.0), fence, 60, 60, time.time())
    )
    assert service.store.write(key.key, newer, 60_000)
    written = service.writer.put(ITEM, "new", mode, guarded=True)
    assert (written.item["version"], written.action) == (2, "kept-newer")
    assert service.store.read(key.key).entry.version == 9


def test_a_write_through_that_a_newer_commit_overtook_leaves_that_commits_tombstone(
    settings, db, services
):
    """The post-write check: version 3 committed while version 2's entry was
    being written (its own tombstone lost, e.g. to a purge). The row says so;
    a tombstone of version 3 goes over version 2's entry."""
    service = services(settings, db)
    key = cached_version_1(service, "write-through")
    committed = db.item_version

    def overtaken(item_id: int) -> int | None:
        current = committed(item_id)
        return None if current is None else current + 1  # version 3, already committed

    db.item_version = overtaken
    written = service.writer.put(ITEM, "new", "write-through", guarded=True)
    assert (written.item["version"], written.action) == (2, "kept-newer")
    left = service.store.read(key.key).entry
    assert left.tombstone and left.version == 3


def test_a_write_through_is_kept_when_the_database_cannot_say(settings, db, services):
    """The post-write check asks the row's version; if the database does not
    answer, the guarded entry stands (it is refused by any newer mark)."""
    service = services(settings, db)
    key = cached_version_1(service, "write-through")

    def down(item_id: int) -> int | None:
        from cachelab.postgres.database import DatabaseUnavailable

        raise DatabaseUnavailable("down after the commit")

    db.item_version = down
    written = service.writer.put(ITEM, "new", "write-through", guarded=True)
    assert written.action == "written"
    assert service.store.read(key.key).entry.version == 2


# -- from mutmut's survivors of writes.py (2026-12-05) ----------------------------------
def test_a_write_to_an_absent_item_names_it(settings, db, services):
    service = services(settings, db)
    with pytest.raises(NotFound, match="^no item 999$"):
        service.writer.put(999, "new", "delete", guarded=True)


def test_a_written_through_entry_records_no_query_time(settings, db, services):
    """The write did not query: XFetch must not refresh it early for a query
    time it never had."""
    service = services(settings, db)
    key = cached_version_1(service, "write-through")
    service.writer.put(ITEM, "new", "write-through", guarded=True)
    entry = service.store.read(key.key).entry
    assert (entry.version, entry.delta) == (2, 0.0)


def test_the_unguarded_write_through_is_a_plain_set_that_can_lose_a_race(settings, db, services):
    """What the unguarded variant exists to show: its write replaces whatever
    Redis holds, even a newer version, and it never asks the database whether a
    newer commit exists."""
    service = services(settings, db)
    key = cached_version_1(service, "write-through", guarded=False)
    row = dict(db.items[ITEM])
    newer = new_entry(Loaded({**row, "version": 3}, 3, 0.0), 10**17, 60.0, 60.0, 1.0)
    assert service.store.write(key.key, newer, newer.px)
    db.update_item(ITEM, "committed after")  # the database has version 2 now
    assert service.writer._after_commit(key, row, "write-through") == "written"
    assert service.store.read(key.key).entry.version == 1  # the older write won: the race


def test_a_failed_cache_action_is_logged_with_its_key_and_a_bounded_reason(
    settings, db, services, caplog, monkeypatch
):
    service = services(settings, db)
    reason = "injected: " + "x" * 300

    def fail(*_args, **_kwargs):
        raise CacheUnavailable(reason)

    monkeypatch.setattr(service.store, "bury", fail)
    with caplog.at_level(logging.WARNING, logger="cachelab"):
        assert service.writer.put(ITEM, "new", "delete", guarded=True).action == "failed"
    (record,) = [r for r in caplog.records if r.getMessage() == "cache action after a write failed"]
    key = item_target(settings.cache_namespace, ITEM, "delete")
    assert (record.key, record.reason) == (key.key, reason[:200])
