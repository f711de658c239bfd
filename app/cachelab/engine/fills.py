"""Fills: at most one query per key, across the threads of a worker and every process.

Rules
-----
* **Single flight in a worker.** Concurrent requests of one worker for one cold
  key share one flight: the leader fills, the followers wait for its answer
  (at most ``fill_wait_seconds``). The bulkhead admits leaders and followers
  apart (:mod:`cachelab.resilience.bulkhead`).
* **A lease across processes.** The leader takes the key's lease (``SET NX PX``
  plus a fence, :mod:`cachelab.engine.store`) and re-reads the key first: if
  the previous holder filled it, that is the answer. While it works, a keeper
  thread renews every lease it holds every third of ``CACHE_LOCK_LEASE_SECONDS``,
  so the lease covers the holder's whole path however long it takes.
* **Lost only when refused.** A renewal that Redis refuses (the lease is gone
  or someone else's) marks the lease lost; one that fails (a timeout, a pause)
  is retried at the next round. A holder that dies stops renewing, and its
  lease ends within ``CACHE_LOCK_LEASE_SECONDS``.
* **Waiters wait while the lease lives.** A leader that finds the lease held
  elsewhere waits for the value, woken by the invalidation its write causes
  (polling with back-off without tracking), and takes the lease over only
  when it lapses. It never runs a second query beside a live lease; after
  ``CACHE_LOCK_WAIT_SECONDS`` it gives up (:class:`FillTimeout`, a 503).
* **A follower takes only what was read after it arrived.** An answer whose
  data was read (queried, or found in Redis) before a follower's request began
  may miss a write that request follows: that follower fills again in a
  flight of its own (which finds the entry in Redis: no second query).
* **Guarded writes, checked rows.** The entry carries the lease's fence and the
  row's version; the write is refused if Redis holds something newer (a
  tombstone, a newer entry). For versioned rows the source is asked, before the
  write and again after it lands, whether the row changed since it was read --
  so a fill that read an old row never stands, even if the tombstone that
  should stop it was evicted or purged (after: a tombstone one version newer
  goes over it). A refused fill is *superseded*: its answer is right for the
  request that ran it (which began before the write), and no copy of it is
  kept.
* **Not found** is cached too, as an ``absent`` entry for
  ``NEGATIVE_TTL_SECONDS``.
* **Background refreshes** (a stale or XFetch-due entry) run on the worker's
  bounded pool (:mod:`cachelab.resilience.background`) under the same lease
  and checks; a failure keeps the stale entry (stale-if-error); every outcome
  is counted.
* **Patient on the cold path.** A leader's Redis calls (the lease and its
  renewals, its reads while it waits, the entry it stores) go past the breaker with
  ``REDIS_RETRY_TIMEOUT_MS``: the alternative to waiting is a second slow
  query, and a stampede on a saturated machine answers slower than
  ``REDIS_TIMEOUT_MS`` (found by the stack test: 93 of 100 users of one cold
  key went without the lease, four queries ran).
* **Without Redis** a worker queries each key once and keeps the result as an
  unconfirmed copy (:meth:`Fills.fill_locally`).
* **One flight per key, whichever path leads it.** A request that lost Redis
  and one that has it share the key's flight: a worker never runs two queries
  of one key at once, so the query slots are taken by distinct keys only (found
  by the checker: a degraded query held the only free slot, and the next read
  of the same key, Redis well again, was refused 503 ``overloaded``).
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .. import metrics
from ..config import Settings
from ..resilience.background import BackgroundJobs
from ..resilience.bulkhead import Bulkhead
from ..resilience.singleflight import SingleFlight
from .model import (
    DATABASE,
    NO_VERSION,
    REDIS,
    Entry,
    Loaded,
    NotFound,
    SourceUnavailable,
    Target,
    Timer,
    absent,
    jittered_ttl,
    new_entry,
)
from .store import CacheUnavailable, Read, RedisStore
from .tier1 import Copy, Snapshot, Tier1

log = logging.getLogger(__name__)

_POLL_SECONDS = (0.02, 0.05, 0.1, 0.2)  # waiting without tracking
_WATCH_SECONDS = 1.0  # with tracking: re-check at least this often anyway


class Source(Protocol):
    """Where a miss goes (the lab's PostgreSQL queries: :mod:`cachelab.postgres.sources`)."""

    def load(self, target: Target) -> Loaded:
        """Run the target's query. Raises :class:`NotFound` or :class:`SourceUnavailable`."""
        ...

    def still_current(self, target: Target, version: int | None) -> bool:
        """Is ``version`` (None: absent) still the row's version? A cheap check."""
        ...


class RedisDown(Exception):
    """Redis failed mid-fill: the read path serves the degraded answer instead."""


class FillTimeout(Exception):
    """Another process holds the key's lease and did not fill it in time (503)."""


@dataclass(frozen=True)
class Filled:
    """What a fill got: an entry (of any kind but a tombstone) and how."""

    entry: Entry
    tier: str  # DATABASE: this worker queried; REDIS: another process filled it
    copy: Copy | None
    ttl_remaining: float
    observed_at: float  # monotonic: when its data was read (query start, or Redis read)
    stored: bool = False
    superseded: bool = False
    detail: str = ""


@dataclass
class Lease:
    lease_key: str
    token: str
    fence: int
    lost: bool = False


@dataclass(frozen=True)
class Busy:
    """Someone else holds the lease; it lives at most ``seconds`` more."""

    seconds: float


class Fills:
    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        tier1: Tier1,
        source: Source,
        bulkhead: Bulkhead,
        jobs: BackgroundJobs,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tier1 = tier1
        self.source = source
        self.bulkhead = bulkhead
        self.jobs = jobs
        self.clock = clock
        self.rng = rng or random.Random()
        self.wall = wall
        self.flights: SingleFlight[Filled] = SingleFlight()
        self.lease_ms = max(1, int(settings.cache_lock_lease_seconds * 1000))
        self.tracking_active: Callable[[], bool] = tier1.covered
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._keeper: threading.Thread | None = None
        tier1.on_change(jobs.forget)

    # -- cold keys: one query across every process -------------------------------------
    def fill(self, target: Target, timer: Timer) -> Filled:
        """The entry for a cold key, filled once. Raises :class:`RedisDown`,
        ``Overloaded``, ``FlightTimeout``, :class:`FillTimeout` or
        :class:`SourceUnavailable`."""
        lead = lambda: self._lead(target, timer)  # noqa: E731
        filled, shared = self._flight(self.flights, target, lead, timer)
        if shared and filled.observed_at < timer.started:
            # The flight read the data before this request began: a write this
            # request follows (read-your-writes) may be missing from it. Look
            # again, in a flight that starts after this request did.
            filled, shared = self._flight(self.flights, target, lead, timer)
        return filled

    def _flight(
        self,
        flights: SingleFlight[Filled],
        target: Target,
        lead: Callable[[], Filled],
        timer: Timer,
    ) -> tuple[Filled, bool]:
        """Lead the key's flight in this worker, or follow it (each kind of thread
        admitted by the bulkhead apart)."""
        flight = flights.join(target.key)
        if flight.leader:
            try:
                with self.bulkhead.miss():
                    filled = lead()
            except BaseException as exc:
                flight.fail(exc)
                raise
            flight.resolve(filled)
            return filled, False
        started = time.perf_counter()
        with self.bulkhead.follower():
            filled = flight.wait(self.settings.fill_wait_seconds)
        timer.add("lock", started)
        return replace(filled, stored=False, detail="collapsed"), True

    def _lead(self, target: Target, timer: Timer) -> Filled:
        deadline = self.clock() + self.settings.cache_lock_wait_seconds
        watched = (target.key, target.lease_key)
        event = self.tier1.watch(watched)
        polls = 0
        try:
            while True:
                started = time.perf_counter()
                outcome = self._redis(lambda: self._try_acquire(target, patient=True))
                timer.add("lock", started)
                if isinstance(outcome, Lease):
                    return self._fill_holding(target, outcome, timer)
                started = time.perf_counter()
                snapshot = self.tier1.snapshot(target.key)
                observed = self.clock()
                read = self._redis(lambda: self.store.read_patiently(target.key))
                timer.add("lock", started)
                if read.entry is not None and not read.entry.tombstone:
                    metrics.LOCK_WAITS["filled"].inc()
                    return self._from_redis(target, read, snapshot, observed)
                now = self.clock()
                if now >= deadline:
                    metrics.LOCK_WAITS["timeout"].inc()
                    raise FillTimeout(
                        f"another process held the lease of {target.key} for "
                        f"{self.settings.cache_lock_wait_seconds:g}s without filling it"
                    )
                if self.tracking_active():
                    wait = min(outcome.seconds, _WATCH_SECONDS, deadline - now)
                else:
                    wait = min(_POLL_SECONDS[min(polls, len(_POLL_SECONDS) - 1)], deadline - now)
                    polls += 1
                started = time.perf_counter()
                event.wait(max(wait, 0.001))
                event.clear()
                timer.add("lock", started)
        finally:
            self.tier1.unwatch(watched, event)

    def _fill_holding(self, target: Target, lease: Lease, timer: Timer) -> Filled:
        try:
            snapshot = self.tier1.snapshot(target.key)
            observed = self.clock()
            read = self._redis(lambda: self.store.read_patiently(target.key))
            if read.entry is not None and not read.entry.tombstone and read.soft_remaining > 0:
                metrics.LOCK_WAITS["filled"].inc()  # the previous holder filled it
                return self._from_redis(target, read, snapshot, observed)
            with self.bulkhead.query():
                observed = self.clock()
                entry = self._query(target, lease.fence, timer)
            return self._store(target, entry, observed, timer, patient=True)
        finally:
            self._release(lease)

    def fill_each(self, target: Target, timer: Timer) -> Filled:
        """Cache-aside's miss: every concurrent miss queries (no single flight).
        The entry has no grace: it is gone at its TTL."""
        with self.bulkhead.miss(), self.bulkhead.query():
            observed = self.clock()
            entry = self._query(target, 0, timer, grace=False)
        if target.guarded:
            try:
                entry = replace(entry, fence=self.store.next_fence(target.fence_key))
            except CacheUnavailable:
                pass
        return self._store(target, entry, observed, timer)

    def load_uncached(self, target: Target, timer: Timer) -> Entry:
        """The bypass: query in a query slot, store nothing."""
        with self.bulkhead.query():
            return self._query(target, 0, timer, grace=False)

    def _query(self, target: Target, fence: int, timer: Timer, grace: bool = True) -> Entry:
        """Run the query and make the entry (``absent`` for a row that does not exist)."""
        started = time.perf_counter()
        try:
            loaded = self.source.load(target)
        except NotFound:
            seconds = time.perf_counter() - started
            return absent(fence, self.settings.negative_ttl_seconds, seconds, self.wall())
        finally:
            timer.add("db", started)
        ttl = jittered_ttl(
            self.settings.cache_ttl_seconds, self.settings.cache_jitter_ratio, self.rng
        )
        return new_entry(
            loaded,
            fence,
            ttl,
            float(self.settings.cache_grace_seconds) if grace else 0.0,
            self.wall(),
        )

    def _store(
        self, target: Target, entry: Entry, observed: float, timer: Timer, patient: bool = False
    ) -> Filled:
        """Write ``entry`` (guarded unless the target is not) and keep this worker's
        copy of it -- servable only if Redis now holds it. A write refused
        because Redis or the source has something newer keeps no copy."""
        if target.guarded and not self._still_current(target, entry):
            metrics.FILLS_SUPERSEDED["row-changed"].inc()
            return Filled(entry, DATABASE, None, entry.ttl, observed, superseded=True)
        snapshot = self.tier1.snapshot(target.key)
        started = time.perf_counter()
        try:
            stored = self.store.write(
                target.key, entry, entry.px, guarded=target.guarded, patient=patient
            )
            reachable = True
        except CacheUnavailable:
            stored = reachable = False
        finally:
            timer.add("cache", started)
        if reachable and not stored:
            metrics.FILLS_SUPERSEDED["newer-in-redis"].inc()
            return Filled(entry, DATABASE, None, entry.ttl, observed, superseded=True)
        if stored and target.guarded and not self._still_current(target, entry):
            self._retract(target, entry)
            metrics.FILLS_SUPERSEDED["row-changed"].inc()
            return Filled(entry, DATABASE, None, entry.ttl, observed, superseded=True)
        copy = self.tier1.put(
            target.key, entry, entry.ttl, entry.ttl + entry.grace, snapshot, confirmed=stored
        )
        return Filled(entry, DATABASE, copy, entry.ttl, observed, stored=stored)

    def _retract(self, target: Target, entry: Entry) -> None:
        """A commit landed between the row's check and the write, and the
        tombstone that should have refused the write may be gone (a purge, an
        eviction, a restart): a tombstone one version newer goes over it."""
        newer = max(entry.version if entry.version is not None else NO_VERSION, 0) + 1
        try:
            self.store.bury(
                target.key, target.fence_key, newer, self.wall(), self.settings.tombstone_ttl_ms
            )
        except CacheUnavailable as exc:  # then the entry ages out by its TTL
            log.warning("a superseded fill stayed", extra={"key": target.key, "reason": str(exc)})

    def _still_current(self, target: Target, entry: Entry) -> bool:
        try:
            return self.source.still_current(target, None if entry.absent else entry.version)
        except SourceUnavailable:
            return True  # the guarded write and the tombstone still stand

    def _from_redis(
        self, target: Target, read: Read, snapshot: Snapshot, observed: float
    ) -> Filled:
        assert read.entry is not None
        soft = read.soft_remaining
        copy = self.tier1.put(target.key, read.entry, soft, read.pttl_ms / 1000, snapshot)
        return Filled(read.entry, REDIS, copy, soft, observed, detail="collapsed")

    # -- without Redis: one query per key in this worker ----------------------------------
    def fill_locally(self, target: Target, timer: Timer) -> Filled:
        """Lead the key's flight with a query of its own, or follow the flight in
        progress (a fill with Redis is as good an answer). If that fill lost
        Redis too, join again: its leader, degraded now, joins the same way,
        and the two share one query. Past a second loss, query alone."""
        lead = lambda: self._load_locally(target, timer)  # noqa: E731
        for _ in range(2):
            try:
                return self._flight(self.flights, target, lead, timer)[0]
            except RedisDown:
                continue  # the flight followed has ended
        with self.bulkhead.miss():
            return self._load_locally(target, timer)

    def _load_locally(self, target: Target, timer: Timer) -> Filled:
        with self.bulkhead.query():
            observed = self.clock()
            entry = self._query(target, 0, timer)  # fence 0: whatever Redis gets is newer
        return self._keep_unconfirmed(target, entry, observed)

    def _keep_unconfirmed(self, target: Target, entry: Entry, observed: float) -> Filled:
        snapshot = self.tier1.snapshot(target.key)
        copy = self.tier1.put(
            target.key, entry, entry.ttl, entry.ttl + entry.grace, snapshot, confirmed=False
        )
        return Filled(entry, DATABASE, copy, entry.ttl, observed)

    def refresh_locally_in_background(self, target: Target) -> None:
        """Redis is unavailable and this worker's copy is stale: refresh it once."""
        key = f"local:{target.key}"
        if self.jobs.claim(key):
            self.jobs.submit(key, lambda: self._refresh_locally(target))

    def _refresh_locally(self, target: Target) -> None:
        outcome = "error"
        try:
            observed = self.clock()
            self._keep_unconfirmed(target, self._query(target, 0, Timer()), observed)
            outcome = "ok"
        except SourceUnavailable as exc:
            log.warning("local refresh failed", extra={"key": target.key, "reason": str(exc)})
        except Exception:  # never lost silently: logged with its traceback, counted
            log.exception("local refresh crashed", extra={"key": target.key})
        finally:
            metrics.REFRESHES[("stale", outcome)].inc()

    # -- background refreshes ------------------------------------------------------------
    def refresh_in_background(self, target: Target, seen: Entry, trigger: str) -> None:
        if self.jobs.claim(target.key):
            self.jobs.submit(target.key, lambda: self._refresh(target, seen, trigger))
        elif self.jobs.refused:
            metrics.REFRESHES_REFUSED.set(self.jobs.refused)

    def _refresh(self, target: Target, seen: Entry, trigger: str) -> None:
        """One refresh across every process; on failure the stale entry stays."""
        outcome = "error"
        try:
            acquired = self._try_acquire(target)
            if isinstance(acquired, Busy):
                self.jobs.defer(target.key, acquired.seconds)
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
                observed = self.clock()
                entry = self._query(target, acquired.fence, Timer())
                filled = self._store(target, entry, observed, Timer())
                outcome = "superseded" if filled.superseded else "ok" if filled.stored else "error"
            finally:
                self._release(acquired)
        except (SourceUnavailable, CacheUnavailable) as exc:
            log.warning(
                "background refresh failed", extra={"key": target.key, "reason": str(exc)[:200]}
            )
        except Exception:  # never lost silently: logged with its traceback, counted
            log.exception("background refresh crashed", extra={"key": target.key})
        finally:
            metrics.REFRESHES[(trigger, outcome)].inc()

    # -- leases ----------------------------------------------------------------------------
    def _try_acquire(self, target: Target, patient: bool = False) -> Lease | Busy:
        """Take the lease now or say how long the current one still lives.
        Raises :class:`CacheUnavailable` when Redis cannot tell."""
        token = secrets.token_hex(16)
        result = self.store.acquire(
            target.lease_key, target.fence_key, token, self.lease_ms, patient=patient
        )
        if result < 0:
            return Busy(-result / 1000)
        lease = Lease(target.lease_key, token, result)
        with self._lock:
            self._held[token] = lease
            if self._keeper is None and not self._stopped:
                self._keeper = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
                self._keeper.start()
        return lease

    def _release(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.token, None)
        if not lease.lost:
            self.store.release(lease.lease_key, lease.token)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def renew_all(self) -> None:
        """One round of renewals (the keeper's body; tests call it directly)."""
        for lease in self.held():
            try:
                renewed = self.store.extend(
                    lease.lease_key, lease.token, self.lease_ms, patient=True
                )
            except CacheUnavailable:
                continue  # Redis could not tell: try again at the next round
            if not renewed:
                lease.lost = True
                with self._lock:
                    self._held.pop(lease.token, None)
                log.warning("fill lease lost", extra={"lock": lease.lease_key})

    def _keep(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stopped:
            self._wake.wait(interval)
            if self._stopped:
                return
            self.renew_all()

    def close(self, release: bool = True) -> None:
        """Stop renewing; release what is held unless the worker is being killed."""
        self._stopped = True
        self._wake.set()
        if release:
            for lease in self.held():
                self._release(lease)

    @staticmethod
    def _redis(call):
        try:
            return call()
        except CacheUnavailable as exc:
            raise RedisDown(str(exc)) from exc
