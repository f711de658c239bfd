"""The caching strategies the lab compares, over one Redis store and one database.

``none``
    Every request runs the slow query. The baseline.
``cache-aside``
    The 2021 reference done right: read Redis; on a miss run the query and
    store the result for the TTL. Concurrent misses all run the query (a
    stampede) and every expiry makes a user wait: that is the point of
    comparing it.
``swr``
    Stale-while-revalidate with single flight, after dogpile.cache: an entry
    is fresh for the TTL (jittered), then served stale for up to
    ``CACHE_GRACE_SECONDS`` while one background refresh runs; XFetch may
    refresh it a little early. A cold key is filled once across every process
    (:mod:`cachelab.engine.fills`).
``two-tier`` (default)
    ``swr`` plus tier 1: a fresh entry this worker has seen is served from its
    own memory, with no round trip to Redis, kept coherent by Redis' tracking
    invalidations (:mod:`cachelab.engine.tracking`, :mod:`cachelab.engine.local`).
``edge``
    ``two-tier`` here; Nginx in front keeps its own short-lived copy of each
    answer (nginx/, docs/caching.md), so most hits never reach this engine.

With Redis unavailable every strategy falls back to :mod:`cachelab.engine.degraded`;
after Redis lost its data (a restart), a worker's copy is written back rather
than queried again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..config import Settings
from ..postgres.database import Database
from .admission import Admission
from .degraded import Degraded
from .entry import Entry, xfetch_due
from .fills import Filler, RedisDown
from .leases import Leases
from .local import LocalEntries, LocalEntry
from .lookup import BYPASS, DATABASE, HIT, MEMORY, MISS, REDIS, STALE, Lookup, Target, Timer
from .refresher import Refresher
from .sources import Loader
from .store import CacheUnavailable, Read, RedisStore
from .tracking import Tracking


class CacheService:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        db: Database,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.db = db
        self.clock = clock
        self.rng = rng or random.Random()
        self.local = LocalEntries(
            settings.local_cache_size, settings.memory_fallback_ttl_ms / 1000, clock
        )
        self.refresher = Refresher(settings.refresh_threads, clock)
        self.tracking = Tracking(
            store.client,
            f"{settings.cache_namespace}:v2:",
            self.local,
            settings.tracking_heartbeat_seconds,
            enabled=settings.cache_tracking == "auto",
            on_invalidate=self.refresher.forget,
        )
        store.on_failover = self.tracking.reconnect
        self.admission = Admission(settings.miss_slots, settings.fill_slots)
        self.leases = Leases(store, settings.cache_lock_lease_seconds)
        self.loader = Loader(settings, db, self.rng, wall)
        self.filler = Filler(
            settings,
            store,
            self.leases,
            self.local,
            self.tracking,
            self.admission,
            self.loader,
            self.refresher,
            clock,
        )
        self.degraded = Degraded(
            settings, self.local, self.admission, self.loader, self.refresher, clock
        )
        self.memory_tier = settings.memory_tier

    def start(self) -> None:
        """Start the background threads (after fork: gunicorn calls create_app per worker)."""
        self.tracking.start()

    def shutdown(self) -> None:
        """Worker exit: drop queued refreshes, release leases, stop listening."""
        self.refresher.shutdown()
        self.leases.close()
        self.tracking.close()

    # -- the entry point ----------------------------------------------------------------
    def get(self, target: Target, bypass: bool = False) -> Lookup:
        strategy = self.settings.cache_strategy
        timer = Timer()
        if strategy == "none" or bypass:
            with self.admission.fill():
                loaded = self.loader.load(target, timer)
            return Lookup(
                target=target,
                strategy=strategy,
                result=BYPASS,
                tier=DATABASE,
                value=loaded.value,
                detail="request" if bypass else "strategy-none",
                timings_ms=dict(timer.timings),
            )
        if self.memory_tier:
            hit = self.memory_hit(target)
            if hit is not None:
                return hit
        snapshot = self.local.snapshot(target.key)
        started = time.perf_counter()
        try:
            read = self.store.read(target.key)
        except CacheUnavailable:
            timer.add("cache", started)
            return self.degraded.serve(target, strategy, timer)
        timer.add("cache", started)
        if read.entry is not None and strategy == "cache-aside" and read.soft_remaining <= 0:
            read = Read(None, None, -2)  # past its TTL (a grace entry of another strategy)
        if read.entry is not None:
            left = read.soft_remaining
            local = self.local.put(target.key, read.entry, left, read.pttl_ms / 1000, snapshot)
            if strategy != "cache-aside" and left <= 0:
                self.filler.refresh_in_background(target, read.entry, "stale")
                result = STALE
            else:
                if strategy != "cache-aside":  # whether or not a copy was kept
                    self._early_refresh_if_due(target, read.entry, left)
                result = HIT
            return Lookup(
                target=target,
                strategy=strategy,
                result=result,
                tier=REDIS,
                value=read.entry.value,
                entry=read.entry,
                local=local,
                ttl_remaining=left,
                timings_ms=dict(timer.timings),
            )
        if read.tombstone is None and self.tracking.active:
            reseeded = self._reseed(target, strategy, timer)
            if reseeded is not None:
                return reseeded
        try:
            if strategy == "cache-aside":
                return self._cache_aside_fill(target, timer)
            return self.filler.fill(target, strategy, timer)
        except RedisDown:
            return self.degraded.serve(target, strategy, timer)

    def memory_hit(self, target: Target) -> Lookup | None:
        """Tier 1: this worker's fresh copy, after applying any invalidation already
        received (strategy ``two-tier`` only). Also the WSGI hit path's lookup
        (:mod:`cachelab.web.hitpath`)."""
        if not self.memory_tier:
            return None
        started = time.perf_counter()
        self.tracking.sync()
        if target.read_your_writes and not self.tracking.active:
            return None  # an uncovered copy could predate a write another worker made
        local = self.local.servable(target.key)
        if local is None:
            return None
        left = local.soft_deadline - self.clock()
        memory_ms = (time.perf_counter() - started) * 1000
        self._maybe_early_refresh(target, local, left)
        return Lookup(
            target=target,
            strategy=self.settings.cache_strategy,
            result=HIT,
            tier=MEMORY,
            value=local.entry.value,
            entry=local.entry,
            local=local,
            ttl_remaining=left,
            timings_ms={"memory": memory_ms},
        )

    # -- helpers ----------------------------------------------------------------------
    def _maybe_early_refresh(self, target: Target, local: LocalEntry, left: float) -> None:
        self._early_refresh_if_due(target, local.entry, left)

    def _early_refresh_if_due(self, target: Target, entry: Entry, left: float) -> None:
        if xfetch_due(entry, left, self.settings.xfetch_beta, self.rng):
            self.filler.refresh_in_background(target, entry, "early")

    def _cache_aside_fill(self, target: Target, timer: Timer) -> Lookup:
        """The reference's miss: every concurrent miss queries (no single flight)."""
        with self.admission.miss(), self.admission.fill():
            loaded = self.loader.load(target, timer)
        fence = 0
        if target.guarded:
            try:
                fence = self.store.next_fence()
            except CacheUnavailable:
                pass
        entry = self.loader.entry(loaded, fence, grace=False)
        local, stored, _ = self.filler.store_and_keep(target, entry, timer)
        return Lookup(
            target=target,
            strategy="cache-aside",
            result=MISS,
            tier=DATABASE,
            value=entry.value,
            entry=entry,
            local=local,
            ttl_remaining=entry.ttl,
            stored=stored,
            timings_ms=dict(timer.timings),
        )

    def _reseed(self, target: Target, strategy: str, timer: Timer) -> Lookup | None:
        """Redis has no entry although this worker holds a copy that no
        invalidation removed: Redis lost its data (restart, failover to an
        empty node). Serve the copy and write it back instead of querying."""
        copy = self.local.last_copy(target.key)
        if copy is None or not self.local.reseedable(copy):
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
        if strategy != "cache-aside" and left <= 0:
            self.filler.refresh_in_background(target, copy.entry, "stale")
        return Lookup(
            target=target,
            strategy=strategy,
            result=HIT if left > 0 else STALE,
            tier=REDIS,
            value=copy.entry.value,
            entry=copy.entry,
            local=copy,
            detail="reseeded",
            ttl_remaining=left,
            timings_ms=dict(timer.timings),
        )
