"""Fill and refresh coordination: one query per key across every process.

Rules
-----
* **Cold key.** The threads of a worker share one flight (the leader, and
  followers that wait at most ``fill_wait_seconds``). The leader takes the
  key's lease (:mod:`cachelab.engine.leases`) and runs the query, or -- if another
  process holds it -- waits for the value. Waiters are woken the moment the
  value lands or the lease goes (tracking invalidations); without tracking
  they poll with back-off. A waiter that sees the lease gone without a value
  (its holder died or failed) takes the lease itself.
* **Generation check.** Whoever wins a lease reads the key again before it
  queries: if the entry it came for is already there (fresh), it is done.
  Writes are guarded by the lease's fence, so a late holder never
  overwrites a newer entry.
* **Lock timeout.** A waiter still waiting after ``CACHE_LOCK_WAIT_SECONDS``
  (the holder is alive but slower than allowed) runs the query itself and
  stores its result, guarded by a fresh fence.
* **Background refresh.** A stale or XFetch-due entry is refreshed by one
  task per worker (:mod:`cachelab.engine.refresher`) under the same lease and
  generation check; a failure keeps the stale entry (stale-if-error) and is
  logged and counted.
* Every query runs in a fill slot and every waiter in a miss slot
  (:mod:`cachelab.engine.admission`), so misses cannot take the threads of hits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .. import metrics
from ..config import Settings
from ..postgres.database import DatabaseUnavailable
from .admission import Admission
from .entry import Entry
from .leases import Busy, Lease, Leases
from .local import LocalEntries, LocalEntry
from .lookup import DATABASE, MISS, REDIS, Lookup, Target, Timer
from .refresher import Refresher
from .singleflight import SingleFlight
from .sources import Loader
from .store import CacheUnavailable, Read, RedisStore
from .tracking import Tracking

log = logging.getLogger(__name__)

_POLL_SECONDS = (0.02, 0.05, 0.1, 0.2)  # waiting without tracking
_WATCH_SECONDS = 1.0  # with tracking: re-check at least this often anyway


class RedisDown(Exception):
    """Redis failed mid-fill: the caller serves the degraded path instead."""


class Filler:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        leases: Leases,
        local: LocalEntries,
        tracking: Tracking,
        admission: Admission,
        loader: Loader,
        refresher: Refresher,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.leases = leases
        self.local = local
        self.tracking = tracking
        self.admission = admission
        self.loader = loader
        self.refresher = refresher
        self.clock = clock
        self.flights: SingleFlight[Lookup] = SingleFlight()

    # -- cold keys --------------------------------------------------------------------
    def fill(self, target: Target, strategy: str, timer: Timer) -> Lookup:
        """The entry for a cold key, filled once. Raises :class:`RedisDown`,
        ``Overloaded``, ``FlightTimeout`` or ``DatabaseUnavailable``."""
        started = time.perf_counter()
        with self.admission.miss():
            lookup, shared = self.flights.do(
                target.key,
                lambda: self._lead(target, strategy, timer),
                timeout=self.settings.fill_wait_seconds,
            )
            if shared and lookup.superseded:
                # That query read the row before a write this request may have
                # followed (read-your-writes): look again, in a flight of its own.
                lookup, shared = self.flights.do(
                    target.key,
                    lambda: self._lead(target, strategy, timer),
                    timeout=self.settings.fill_wait_seconds,
                )
        if not shared:
            return lookup
        timer.add("lock", started)
        return Lookup(
            target=target,
            strategy=strategy,
            result=lookup.result,
            tier=lookup.tier,
            value=lookup.value,
            entry=lookup.entry,
            local=lookup.local,
            detail="collapsed" if lookup.result == MISS else lookup.detail,
            ttl_remaining=lookup.ttl_remaining,
            timings_ms=dict(timer.timings),
        )

    def _lead(self, target: Target, strategy: str, timer: Timer) -> Lookup:
        deadline = self.clock() + self.settings.cache_lock_wait_seconds
        watched = (target.key, target.lock_key)
        event = self.tracking.watch(watched)
        polls = 0
        try:
            while True:
                started = time.perf_counter()
                outcome = self._redis(lambda: self.leases.try_acquire(target.lock_key))
                timer.add("lock", started)
                if isinstance(outcome, Lease):
                    return self._fill_holding(target, strategy, outcome, timer)
                started = time.perf_counter()
                snapshot = self.local.snapshot(target.key)
                read = self._redis(lambda: self.store.read(target.key))
                timer.add("lock", started)
                if read.entry is not None:
                    metrics.LOCK_WAITS["filled"].inc()
                    return self._served(target, strategy, read, snapshot, timer, "collapsed")
                now = self.clock()
                if now >= deadline:
                    metrics.LOCK_WAITS["timeout"].inc()
                    return self._fill_without_lease(target, strategy, timer)
                if self.tracking.active:
                    wait = min(outcome.seconds, _WATCH_SECONDS, deadline - now)
                else:
                    wait = min(_POLL_SECONDS[min(polls, len(_POLL_SECONDS) - 1)], deadline - now)
                    polls += 1
                started = time.perf_counter()
                event.wait(max(wait, 0.001))
                event.clear()
                timer.add("lock", started)
        finally:
            self.tracking.unwatch(watched, event)

    def _fill_holding(self, target: Target, strategy: str, lease: Lease, timer: Timer) -> Lookup:
        try:
            snapshot = self.local.snapshot(target.key)
            read = self._redis(lambda: self.store.read(target.key))
            if read.entry is not None and read.soft_remaining > 0:
                metrics.LOCK_WAITS["filled"].inc()  # the previous holder filled it
                return self._served(target, strategy, read, snapshot, timer, "collapsed")
            return self._query_and_store(target, strategy, lease.fence, timer, "")
        finally:
            self.leases.release(lease)

    def _fill_without_lease(self, target: Target, strategy: str, timer: Timer) -> Lookup:
        fence = self._redis(self.store.next_fence)
        return self._query_and_store(target, strategy, fence, timer, "lock-timeout")

    def _query_and_store(
        self, target: Target, strategy: str, fence: int, timer: Timer, detail: str
    ) -> Lookup:
        with self.admission.fill():
            loaded = self.loader.load(target, timer)
        entry = self.loader.entry(loaded, fence)
        local, stored, superseded = self.store_and_keep(target, entry, timer)
        return Lookup(
            target=target,
            strategy=strategy,
            result=MISS,
            tier=DATABASE,
            value=entry.value,
            entry=entry,
            local=local,
            detail=detail,
            ttl_remaining=entry.ttl,
            stored=stored,
            superseded=superseded,
            timings_ms=dict(timer.timings),
        )

    def store_and_keep(
        self, target: Target, entry: Entry, timer: Timer
    ) -> tuple[LocalEntry | None, bool, bool]:
        """Write ``entry`` (guarded unless the target is not) and keep this
        worker's copy of it -- servable only if Redis now holds it. Returns
        ``(copy, stored, superseded)``: a write refused because Redis holds
        something newer (superseded) keeps no copy at all."""
        snapshot = self.local.snapshot(target.key)
        started = time.perf_counter()
        try:
            stored = self.store.write(target.key, entry, entry.px, guarded=target.guarded)
            reachable = True
        except CacheUnavailable:
            stored = reachable = False
        finally:
            timer.add("cache", started)
        if reachable and not stored:
            return None, False, True
        local = self.local.put(
            target.key, entry, entry.ttl, entry.ttl + entry.grace, snapshot, servable=stored
        )
        return local, stored, False

    def _served(
        self, target: Target, strategy: str, read: Read, snapshot, timer: Timer, detail: str
    ) -> Lookup:
        assert read.entry is not None
        soft = read.soft_remaining
        local = self.local.put(target.key, read.entry, soft, read.pttl_ms / 1000, snapshot)
        return Lookup(
            target=target,
            strategy=strategy,
            result=MISS,
            tier=REDIS,
            value=read.entry.value,
            entry=read.entry,
            local=local,
            detail=detail,
            ttl_remaining=soft,
            timings_ms=dict(timer.timings),
        )

    @staticmethod
    def _redis(call):
        try:
            return call()
        except CacheUnavailable as exc:
            raise RedisDown(str(exc)) from exc

    # -- background refresh -----------------------------------------------------------
    def refresh_in_background(self, target: Target, seen: Entry, trigger: str) -> None:
        if self.refresher.claim(target.key):
            self.refresher.submit(target.key, lambda: self.refresh(target, seen, trigger))

    def refresh(self, target: Target, seen: Entry, trigger: str) -> None:
        """One refresh across every process; on failure the stale entry stays."""
        outcome = "error"
        try:
            acquired = self.leases.try_acquire(target.lock_key)
            if isinstance(acquired, Busy):
                self.refresher.busy_elsewhere(target.key, acquired.seconds)
                outcome = "skipped"
                return
            try:
                read = self.store.read(target.key)
                if (
                    read.entry is not None
                    and read.entry.order > seen.order
                    and read.soft_remaining > 0
                ):
                    outcome = "already-fresh"  # another process refreshed it meanwhile
                    return
                loaded = self.loader.load(target, Timer())
                entry = self.loader.entry(loaded, acquired.fence)
                self.store.write(target.key, entry, entry.px, guarded=target.guarded)
                outcome = "ok"
            finally:
                self.leases.release(acquired)
        except (DatabaseUnavailable, CacheUnavailable) as exc:
            log.warning(
                "background refresh failed", extra={"key": target.key, "reason": str(exc)[:200]}
            )
        except Exception:  # never lost silently: logged with its traceback, counted
            log.exception("background refresh crashed", extra={"key": target.key})
        finally:
            metrics.REFRESHES[(trigger, outcome)].inc()
