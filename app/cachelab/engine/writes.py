"""Writes and the four invalidation modes, each with its race and its fix.

Every mode commits the write to PostgreSQL first (the ``items`` trigger bumps
``version``); they differ in what happens to the cache after the commit:

``ttl``
    Nothing. Readers see the old version until the entry expires: staleness
    is bounded by the TTL plus the refresh time (``swr`` serves the stale
    entry while one refresh runs).
``delete`` (default)
    Delete the entry; the next reader misses and reads the new row.
    *Race (delete-then-stale-refill):* a fill that read the row before the
    commit stores it after the delete, and the old version stays for a whole
    TTL. *Fix:* instead of deleting, write a short **tombstone** carrying the
    committed version; a fill is accepted over it only if it read that
    version or a newer one, and a fill re-checks the row's version before it
    writes (so an evicted tombstone changes nothing). ``guard=off`` shows the
    plain delete.
``write-through``
    Write the committed row into the cache. *Race:* two writers commit v1
    then v2 but write the cache in the opposite order, leaving v1. *Fix:* a
    **version check on write** (a guarded write stores only a newer version).
    The guard needs v2's entry in Redis: if a purge, an eviction or a restart
    removed it before v1's write landed, v1 would stand. So after its write
    lands, the writer asks the row's version (a primary-key lookup); if a
    newer commit exists, it writes that version's tombstone over its own entry
    (found by the checker). A commit after that lookup writes the cache after
    it, and its guarded write wins.
``notify``
    Nothing in the request: a trigger's ``NOTIFY`` reaches every app worker
    (:mod:`cachelab.postgres.notify`), which writes the tombstone -- also for
    writes made directly in SQL that never pass through the app. Asynchronous:
    it does not promise read-your-writes, only a short bounded staleness.

``delete`` and ``write-through`` give read-your-writes: when the PUT has
returned, the next GET through Nginx returns that version or a newer one
(the tombstone or new entry is in Redis, and the tracking invalidation has
been sent to every worker before the PUT's answer -- one more round trip to
Redis proves it, :meth:`.RedisStore.settle`; a worker whose tier 1 is
not covered reads these items from Redis, never from memory). The cache action
after the commit is patient -- past the breaker, ``REDIS_RETRY_TIMEOUT_MS`` --
because the promise depends on it: a Redis that is only slow still takes it.
A Redis that cannot take it at all gets ``"cache_action": "failed"``: the
write is done, and that entry ages out by its TTL (a documented exception).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Settings
from .keys import item_target
from .model import (
    Loaded,
    NotFound,
    SourceUnavailable,
    Target,
    Timer,
    jittered_ttl,
    new_entry,
)
from .store import CacheUnavailable, RedisStore
from .tier1 import Tier1

log = logging.getLogger(__name__)


class Rows(Protocol):
    def update_item(self, item_id: int, payload: str) -> dict[str, Any] | None: ...

    def item_version(self, item_id: int) -> int | None: ...


@dataclass(frozen=True)
class WriteResult:
    item: dict[str, Any]
    action: str  # what the cache got: none, tombstone, deleted, written, kept-newer, notify, failed
    timings_ms: dict[str, float]


class Writer:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        tier1: Tier1,
        rows: Rows,
        rng: Any,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tier1 = tier1
        self.rows = rows
        self.rng = rng
        self.wall = wall

    def put(self, item_id: int, payload: str, mode: str, guarded: bool) -> WriteResult:
        timer = Timer()
        started = time.perf_counter()
        try:
            row = self.rows.update_item(item_id, payload)
        finally:
            timer.add("db", started)
        if row is None:
            raise NotFound(f"no item {item_id}")
        target = item_target(self.settings.cache_namespace, item_id, mode, guarded)
        started = time.perf_counter()
        try:
            action = self._after_commit(target, row, mode)
        except CacheUnavailable as exc:
            # Committed, but the cache could not be told: the entry ages out by
            # its TTL. Said in the answer, logged, never a 5xx for a done write.
            log.warning(
                "cache action after a write failed",
                extra={"key": target.key, "reason": str(exc)[:200]},
            )
            action = "failed"
        else:
            if target.read_your_writes:
                self.store.settle(target.key)
        finally:
            timer.add("cache", started)
        self.tier1.forget(target.key)
        return WriteResult(row, action, timer.timings)

    def _after_commit(self, target: Target, row: dict[str, Any], mode: str) -> str:
        if mode == "ttl":
            return "none"
        if mode == "notify":
            return "notify"
        version = int(row["version"])
        if mode == "delete":
            return self.invalidate(target, version)
        assert mode == "write-through"
        fence = self.store.next_fence(target.fence_key, patient=True) if target.guarded else 0
        ttl = jittered_ttl(
            self.settings.cache_ttl_seconds, self.settings.cache_jitter_ratio, self.rng
        )
        entry = new_entry(
            Loaded(row, version, 0.0),
            fence,
            ttl,
            float(self.settings.cache_grace_seconds),
            self.wall(),
        )
        written = self.store.write(
            target.key, entry, entry.px, guarded=target.guarded, patient=True
        )
        if not written:
            return "kept-newer"
        newer = self._newer_version(int(row["id"]), version) if target.guarded else None
        if newer is not None:
            self.invalidate(target, newer)
            return "kept-newer"
        return "written"

    def _newer_version(self, item_id: int, version: int) -> int | None:
        """The row's version if a commit newer than ``version`` exists (None if
        not, or if the database cannot tell: then the guard alone stands)."""
        try:
            current = self.rows.item_version(item_id)
        except SourceUnavailable:
            return None
        return current if current is not None and current > version else None

    def invalidate(self, target: Target, version: int) -> str:
        """The delete of ``delete`` and ``notify``: a tombstone carrying the committed
        version (guarded), or a plain delete (unguarded, to show the race)."""
        if not target.guarded:
            self.store.delete(target.key, patient=True)
            return "deleted"
        written = self.store.bury(
            target.key, target.fence_key, version, self.wall(), self.settings.tombstone_ttl_ms
        )
        return "tombstone" if written else "kept-newer"
