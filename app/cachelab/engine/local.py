"""Each worker's own copies of entries: tier 1, and the last copy for outages.

One bounded map per worker holds the entries it has read or written, with
deadlines on its own monotonic clock, derived from Redis' PTTL when it read
them (so they are never extended by serving them again). A copy serves two
purposes:

* **Tier 1** (strategy ``two-tier``): a fresh copy is served from memory,
  with no network round trip, while it is *servable*: until its soft expiry
  when the tracking listener (:mod:`cachelab.engine.tracking`) was connected from
  before the read until now, otherwise for at most ``MEMORY_FALLBACK_TTL_MS``.
* **The last copy** (every strategy): during a Redis outage, or after Redis
  lost its data (restart, flush), a copy is served until its hard expiry and
  written back, instead of making a user wait for the query.

Rules
-----
* An invalidation of a key (a write by anyone -- this worker's own fills
  included --, a delete, a purge, an expiry) makes the copy unservable at
  once; it stays only as a last copy for outages until a read from Redis
  confirms it again (the next read does).
* A reset (the tracking connection dropped or reconnected) keeps the copies
  as last copies but makes none servable as tier 1: invalidations may have
  been missed. If the listener then finds the *same* Redis process again
  (same ``run_id``), the copies may have missed a deletion and are no longer
  written back; if it finds a new one (a restart, a failover), Redis lost or
  kept its data without deleting anything, and copies may be written back.
* ``FLUSHALL``/``FLUSHDB`` is an operator's deliberate wipe: it drops every
  copy, like a purge.
* A copy read before an invalidation of its key and stored after it would be
  stale forever. :meth:`snapshot` is taken before the Redis read and
  :meth:`put` refuses the copy if any invalidation of that key, or a reset,
  happened in between.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .entry import Entry

_EPOCHS_PER_ENTRY = 4  # invalidation counters kept, per copy the map may hold


@dataclass
class LocalEntry:
    entry: Entry
    soft_deadline: float  # monotonic: soft expiry
    hard_deadline: float  # monotonic: hard expiry (Redis would have dropped it)
    servable_until: float  # monotonic: tier 1 may serve it until then
    reseed_epoch: int = -1  # may be written back while this equals the map's
    verified: bool = True  # no invalidation of its key since Redis confirmed it
    # Bytes prepared once for this generation (see cachelab.web.responses).
    prepared: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    key_epoch: int
    tracking: bool


class LocalEntries:
    def __init__(self, size: int, fallback_ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.fallback_ttl = fallback_ttl
        self.clock = clock
        self.tracking = False  # set by the tracking listener
        self._items: OrderedDict[str, LocalEntry] = OrderedDict()
        self._key_epochs: OrderedDict[str, int] = OrderedDict()
        self._epoch = 0
        self._reseed_epoch = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    # -- reads (no lock: one dict lookup under the GIL) -------------------------
    def servable(self, key: str) -> LocalEntry | None:
        """A copy tier 1 may serve now (fresh and covered by invalidations)."""
        local = self._items.get(key)
        if local is None or self.clock() >= local.servable_until:
            return None
        return local

    def last_copy(self, key: str) -> LocalEntry | None:
        """This worker's copy, fresh or stale, until its hard expiry."""
        local = self._items.get(key)
        if local is None or self.clock() >= local.hard_deadline:
            return None
        return local

    # -- writes --------------------------------------------------------------------
    def snapshot(self, key: str) -> Snapshot:
        with self._lock:
            return Snapshot(self._epoch, self._key_epochs.get(key, 0), self.tracking)

    def put(
        self,
        key: str,
        entry: Entry,
        soft_remaining: float,
        hard_remaining: float,
        snapshot: Snapshot,
        servable: bool = True,
    ) -> LocalEntry | None:
        """Keep ``entry`` (just read from or written to Redis, with the given
        seconds left) unless an invalidation raced with it. Returns the copy
        of exactly this generation, if one is kept. A copy that is not in Redis
        (loaded while Redis was down: ``servable=False``) is never served by
        tier 1 nor written back."""
        now = self.clock()
        with self._lock:
            current = self._items.get(key)
            same = current is not None and current.entry.order == entry.order
            if snapshot.epoch != self._epoch or snapshot.key_epoch != self._key_epochs.get(key, 0):
                return current if same else None  # raced: keep nothing new
            if current is not None and current.entry.order > entry.order and servable:
                return None  # (a copy just loaded from the database is newer than any)
            covered = snapshot.tracking and self.tracking
            reseed = self._reseed_epoch if covered and servable else -1
            if same and servable:
                # The same generation, read again: keep its deadlines (a read never
                # extends them) and bytes; Redis just confirmed it.
                assert current is not None
                if current.servable_until < now:
                    current.servable_until = self._servable(current.soft_deadline, now, covered)
                current.verified, current.reseed_epoch = True, reseed
                return current
            soft = now + soft_remaining
            until = self._servable(soft, now, covered) if servable else 0.0
            local = LocalEntry(
                entry, soft, now + hard_remaining, until, reseed_epoch=reseed, verified=servable
            )
            self._items[key] = local
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return local

    def _servable(self, soft_deadline: float, now: float, covered: bool) -> float:
        return soft_deadline if covered else min(soft_deadline, now + self.fallback_ttl)

    def invalidate(self, keys: Iterable[str]) -> None:
        """The keys changed in Redis: their copies are no longer servable nor
        written back, until a read confirms them (they stay as last copies)."""
        with self._lock:
            for key in keys:
                local = self._items.get(key)
                if local is not None:
                    local.servable_until, local.verified = 0.0, False
                self._key_epochs[key] = self._key_epochs.pop(key, 0) + 1
            while len(self._key_epochs) > self.size * _EPOCHS_PER_ENTRY:
                self._key_epochs.popitem(last=False)

    def reseedable(self, local: LocalEntry) -> bool:
        return local.verified and local.reseed_epoch == self._reseed_epoch

    def reset(self, tracking: bool) -> None:
        """Invalidations may have been missed: nothing is servable any more."""
        with self._lock:
            self._epoch += 1
            self.tracking = tracking
            for local in self._items.values():
                local.servable_until = 0.0

    def missed_deletions(self) -> None:
        """The same Redis, reconnected: a deletion may have gone unheard."""
        with self._lock:
            self._reseed_epoch += 1

    def clear(self) -> None:
        """Redis was flushed on purpose: no copy survives."""
        with self._lock:
            self._epoch += 1
            self._items.clear()

    def forget(self, key: str) -> None:
        """Drop this worker's copy: its own write made it outdated."""
        with self._lock:
            self._items.pop(key, None)
            self._key_epochs[key] = self._key_epochs.pop(key, 0) + 1
