"""The read decision: how one request for one cache entry is answered.

This class is the whole rule of a read. Its collaborators each do one narrow
thing and never call back into it:

========  ==================================================================
tier1     this worker's copies and the rule that keeps them coherent
          (:mod:`cachelab.engine.tier1`)
store     Redis: entries, guarded writes, leases (:mod:`cachelab.engine.store`)
fills     one query per key: single flight, the lease, the bulkhead, the
          query and its guarded write, background refreshes
          (:mod:`cachelab.engine.fills`)
========  ==================================================================

The strategies (``CACHE_STRATEGY``)
-----------------------------------
``none``: every request queries (the baseline). ``cache-aside``: the 2021
reference done right -- Redis, and on a miss every concurrent request queries
(a stampede) and every expiry makes a user wait. ``swr``: stale-while-
revalidate with one fill per key across every process. ``two-tier`` (the
default): ``swr`` plus tier 1.

Rules, in the order they apply
------------------------------
1. **Bypass** (strategy ``none``, or ``?cache=bypass``): query, store nothing.
   -> BYPASS from the database.
2. **Tier 1** (``two-tier``): a copy that tier 1 may serve -- fresh, valid and
   coherent, after applying every invalidation this worker received -- answers
   at once. XFetch may start one early refresh. -> HIT from memory.
3. **Redis**: GET and PTTL in one round trip.

   a. a fresh entry (a value, or a cached "not found") -> HIT from Redis; XFetch
      may start one early refresh in the background;
   b. an entry past its soft TTL, in its grace (not ``cache-aside``) -> STALE,
      served at once while one refresh runs across every process;
   c. nothing, and this worker holds a copy Redis had confirmed with no
      deletion heard since: Redis lost its data (a restart). The copy is
      written back (``SET NX``) and served -> HIT or STALE, ``reseeded``;
   d. nothing, or a tombstone: a cold key -> rule 4.
4. **Cold**: ``cache-aside`` queries in every request; ``swr`` and
   ``two-tier`` fill once across every process (:meth:`Fills.fill`). -> MISS
   (``collapsed`` for requests that waited for another's query).
5. **Redis unavailable** at any step (timeout, error, breaker open): this
   worker's last copy, fresh or stale, until its hard expiry (a stale one is
   refreshed once in the background); for data with read-your-writes, never a
   copy this worker heard invalidated. A request with no copy, whose only other
   answer is the slow query, first reads Redis once more, past the breaker,
   with ``REDIS_RETRY_TIMEOUT_MS``: a Redis that is only slow (a saturated
   machine) still answers it, and a cached key keeps answering. Else one
   query per key in this worker, kept as its copy. -> BYPASS,
   ``redis-unavailable`` (from ``local`` or the database).

A row that does not exist is answered like any value, as a cached "not found"
(a 404 for the client); its entry lives ``NEGATIVE_TTL_SECONDS``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..config import Settings
from .fills import Fills, RedisDown
from .model import (
    BYPASS,
    DATABASE,
    HIT,
    LOCAL,
    MEMORY,
    MISS,
    REDIS,
    STALE,
    Entry,
    Lookup,
    Target,
    Timer,
    xfetch_due,
)
from .store import CacheUnavailable, RedisStore
from .tier1 import Copy, Snapshot, Tier1

DEGRADED = "redis-unavailable"


class ReadPath:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        tier1: Tier1,
        fills: Fills,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.strategy = settings.cache_strategy
        self.memory_tier = settings.memory_tier  # two-tier, and edge behind Nginx
        self.store = store
        self.tier1 = tier1
        self.fills = fills
        self.clock = clock
        self.rng = rng or random.Random()

    def get(self, target: Target, bypass: bool = False) -> Lookup:
        timer = Timer(self.clock())
        if self.strategy == "none" or bypass:  # rule 1
            entry = self.fills.load_uncached(target, timer)
            return self._answer(target, BYPASS, DATABASE, entry, timer, detail=_why_bypass(bypass))
        if self.memory_tier:  # rule 2
            hit = self.from_memory(target, timer)
            if hit is not None:
                return hit
        snapshot = self.tier1.snapshot(target.key)
        started = time.perf_counter()
        try:  # rule 3
            read = self.store.read(target.key)
        except CacheUnavailable:
            if self._outage_copy(target) is not None:
                timer.add("cache", started)
                return self._degraded(target, timer)
            try:  # rule 5's exception: no copy to serve, so ask Redis once more, patiently
                read = self.store.read_patiently(target.key)
            except CacheUnavailable:
                timer.add("cache", started)
                return self._degraded(target, timer)
        timer.add("cache", started)
        found = read.entry
        if found is not None and not found.tombstone:
            entry = found
            left = read.soft_remaining
            if left > 0 or self.strategy != "cache-aside":  # cache-aside never serves past its TTL
                copy = self.tier1.put(target.key, entry, left, read.pttl_ms / 1000, snapshot)
                if left <= 0:  # 3b
                    self.fills.refresh_in_background(target, entry, "stale")
                    return self._answer(target, STALE, REDIS, entry, timer, copy, ttl=left)
                self._refresh_early_if_due(target, entry, left)  # 3a
                return self._answer(target, HIT, REDIS, entry, timer, copy, ttl=left)
        if found is None:  # 3c
            reseeded = self._reseed(target, snapshot, timer)
            if reseeded is not None:
                return reseeded
        try:  # rule 4
            if self.strategy == "cache-aside":
                filled = self.fills.fill_each(target, timer)
            else:
                filled = self.fills.fill(target, timer)
        except RedisDown:
            return self._degraded(target, timer)
        return self._answer(
            target,
            MISS,
            filled.tier,
            filled.entry,
            timer,
            filled.copy,
            detail=filled.detail,
            ttl=filled.ttl_remaining,
            stored=filled.stored,
            superseded=filled.superseded,
        )

    def from_memory(self, target: Target, timer: Timer | None = None) -> Lookup | None:
        """Rule 2 alone (also the WSGI hit path's lookup, :mod:`cachelab.web.hitpath`)."""
        if not self.memory_tier:
            return None
        started = time.perf_counter()
        copy = self.tier1.servable(target.key, target.read_your_writes)
        if copy is None:
            return None
        left = copy.soft_deadline - self.clock()
        timer = timer or Timer()
        timer.timings["memory"] = (time.perf_counter() - started) * 1000
        self._refresh_early_if_due(target, copy.entry, left)
        return self._answer(target, HIT, MEMORY, copy.entry, timer, copy, ttl=left)

    def _refresh_early_if_due(self, target: Target, entry: Entry, left: float) -> None:
        if self.strategy != "cache-aside" and xfetch_due(
            entry, left, self.settings.xfetch_beta, self.rng
        ):
            self.fills.refresh_in_background(target, entry, "early")

    def _reseed(self, target: Target, snapshot: Snapshot, timer: Timer) -> Lookup | None:
        """Rule 3c: Redis has nothing although this worker holds a copy it had
        confirmed. Only while tier 1 is covered, and only if no invalidation of
        the key reached this worker -- including one that arrived with this very
        read (a purge): those are applied first."""
        copy = self.tier1.last_copy(target.key)
        if copy is None or not self.tier1.covered():
            return None
        self.tier1.sync()
        if self.tier1.changed_since(target.key, snapshot) or not self.tier1.reseedable(copy):
            return None
        now = self.clock()
        px = int((copy.hard_deadline - now) * 1000)
        if px <= 0:
            return None
        try:
            self.store.restore(target.key, copy.entry, px)
        except CacheUnavailable:
            pass
        left = copy.soft_deadline - now
        if left <= 0 and self.strategy != "cache-aside":
            self.fills.refresh_in_background(target, copy.entry, "stale")
        result = HIT if left > 0 else STALE
        return self._answer(target, result, REDIS, copy.entry, timer, copy, "reseeded", left)

    def _outage_copy(self, target: Target) -> Copy | None:
        """Rule 5's copy: this worker's last one, until its hard expiry -- but for
        data with read-your-writes never a copy whose invalidation this worker
        heard (Redis only slow, its listener alive: the write that replaced it
        is known, so serving it would break the promise)."""
        if not target.read_your_writes:
            return self.tier1.last_copy(target.key)
        self.tier1.sync()
        copy = self.tier1.last_copy(target.key)
        return copy if copy is not None and copy.valid else None

    def _degraded(self, target: Target, timer: Timer) -> Lookup:
        """Rule 5: Redis is unavailable."""
        copy = self._outage_copy(target)
        if copy is not None:
            left = copy.soft_deadline - self.clock()
            if left <= 0:
                self.fills.refresh_locally_in_background(target)
            return self._answer(target, BYPASS, LOCAL, copy.entry, timer, copy, DEGRADED, left)
        filled = self.fills.fill_locally(target, timer)
        return self._answer(
            target,
            BYPASS,
            DATABASE,
            filled.entry,
            timer,
            filled.copy,
            DEGRADED,
            filled.ttl_remaining,
        )

    def _answer(
        self,
        target: Target,
        result: str,
        tier: str,
        entry: Entry,
        timer: Timer,
        copy: Copy | None = None,
        detail: str = "",
        ttl: float | None = None,
        stored: bool = False,
        superseded: bool = False,
    ) -> Lookup:
        """The one place a :class:`Lookup` is made."""
        return Lookup(
            target=target,
            strategy=self.strategy,
            result=result,
            tier=tier,
            entry=entry,
            copy=copy,
            detail=detail,
            ttl_remaining=ttl,
            stored=stored,
            superseded=superseded,
            timings_ms=dict(timer.timings),
        )


def _why_bypass(requested: bool) -> str:
    return "request" if requested else "strategy-none"
