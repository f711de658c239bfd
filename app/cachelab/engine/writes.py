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
    version or a newer one (``guard=off`` shows the plain delete).
``write-through``
    Write the committed row into the cache. *Race:* two writers commit v1
    then v2 but write the cache in the opposite order, leaving v1. *Fix:* a
    **version check on write** (a guarded write stores only a newer version).
``notify``
    Nothing in the request: a trigger's ``NOTIFY`` reaches every app worker
    (:mod:`cachelab.engine.notify`), which writes the tombstone -- also for writes
    made directly in SQL that never pass through the app. Asynchronous: it
    does not promise read-your-writes, only a short bounded staleness.

``delete`` and ``write-through`` give read-your-writes: when the PUT has
returned, the next GET through Nginx returns that version or a newer one
(the tombstone or new entry is in Redis, and the tracking invalidation has
been sent to every worker before the PUT's answer; a worker whose listener is
not connected reads these items from Redis, never from tier 1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..postgres.database import DatabaseUnavailable
from .entry import tombstone
from .keys import item_target
from .lookup import Target, Timer
from .service import CacheService
from .sources import Loaded, NotFound
from .store import CacheUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    item: dict
    action: str  # what the cache got: none, tombstone, deleted, written, kept-newer, notify, failed
    timings_ms: dict[str, float]


class Writer:
    def __init__(self, service: CacheService) -> None:
        self.service = service
        self.settings = service.settings

    def put(self, item_id: int, payload: str, mode: str, guarded: bool) -> WriteResult:
        timer = Timer()
        started = time.perf_counter()
        try:
            row = self.service.db.update_item(item_id, payload)
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
        finally:
            timer.add("cache", started)
        self.service.local.forget(target.key)
        return WriteResult(row, action, timer.timings)

    def _after_commit(self, target: Target, row: dict, mode: str) -> str:
        store = self.service.store
        if mode == "ttl":
            return "none"
        if mode == "notify":
            return "notify"
        if mode == "delete":
            return invalidate(self.service, target, int(row["version"]))
        assert mode == "write-through"
        fence = store.next_fence() if target.guarded else 0
        entry = self.service.loader.entry(Loaded(row, int(row["version"]), 0.0), fence)
        written = store.write(target.key, entry, entry.px, guarded=target.guarded)
        return "written" if written else "kept-newer"


def invalidate(service: CacheService, target: Target, version: int) -> str:
    """The delete of ``delete`` and ``notify``: a tombstone carrying the committed
    version (guarded), or a plain delete (unguarded, to show the race)."""
    store = service.store
    if not target.guarded:
        store.delete(target.key)
        return "deleted"
    mark = tombstone(version, store.next_fence(), service.loader.wall())
    written = store.write(target.key, mark, service.settings.tombstone_ttl_ms, guarded=True)
    return "tombstone" if written else "kept-newer"


__all__ = ["WriteResult", "Writer", "invalidate", "DatabaseUnavailable"]
