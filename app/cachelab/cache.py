"""The caching strategies the lab compares, over one Redis store and one database.

``none``
    Every request runs the slow query. The baseline.
``cache-aside``
    The 2021 reference done right: read Redis; on a miss run the query and
    store the JSON result for the TTL. Concurrent misses all run the query
    (a stampede) and every expiry makes a user wait: that is the point of
    comparing it.
``swr`` (default)
    Stale-while-revalidate with single flight, after dogpile.cache's model.
    Each entry carries a soft expiry (the configured TTL, with jitter) and
    lives in Redis until a hard expiry (soft + grace). Fresh entries may be
    refreshed early with probability ``exp(-t / (beta * delta))`` (XFetch,
    Vattani et al., PVLDB 2015; the lead is capped at half the TTL); stale ones are served at once while one
    background refresh runs under a Redis lock; if the refresh fails the stale
    value keeps being served (stale-if-error). A cold key is filled once:
    threads of a worker share one flight, workers and containers share one
    Redis lock, and the others wait for the value until
    ``CACHE_LOCK_WAIT_SECONDS``, after which they query the database
    themselves.

With Redis unavailable (error, timeout, or breaker open) every strategy falls
back to the database behind per-process single flight and a small in-process
TTL cache, so an outage costs one query per key, worker and TTL.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from . import metrics
from .config import Settings
from .db import Database, DatabaseUnavailable
from .keys import ENTRY_FORMAT, cache_key, lock_key
from .redis_store import CacheUnavailable, RedisStore
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

HIT, STALE, MISS, BYPASS = "HIT", "STALE", "MISS", "BYPASS"
_WAIT_POLL_SECONDS = (0.02, 0.05, 0.1, 0.2)


@dataclass
class Lookup:
    """What one request got, and how: rendered into the page, JSON and headers."""

    value: dict[str, Any]
    item: int
    key: str
    strategy: str
    result: str  # HIT | STALE | MISS | BYPASS
    source: str  # redis | database | local
    detail: str = ""  # why: collapsed, lock-timeout, redis-unavailable, request, ...
    ttl_remaining: float | None = None
    stored: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def metric_result(self) -> str:
        if self.source == "local":
            return "local"
        if self.detail == "collapsed":
            return "collapsed"
        return self.result.lower()


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def add(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - started) * 1000


class CacheService:
    def __init__(self, settings: Settings, store: RedisStore, db: Database) -> None:
        self.settings = settings
        self.store = store
        self.db = db
        self._fills: SingleFlight[Lookup] = SingleFlight()
        self._db_flights: SingleFlight[dict[str, Any]] = SingleFlight()
        # The last entry this worker served per key, kept until its hard expiry:
        # what a Redis outage is answered from before anyone waits on PostgreSQL.
        self._local: TTLCache = TTLCache(
            settings.local_cache_size, settings.cache_ttl_seconds + settings.cache_grace_seconds)
        self._local_lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        # Bounds the background refreshes a worker runs at once (each holds a
        # database connection): more stale keys than this wait their turn, served stale.
        self._refresher = ThreadPoolExecutor(max_workers=settings.refresh_threads,
                                             thread_name_prefix="refresh")

    # -- entry point ----------------------------------------------------------
    def get(self, item: int, bypass: bool = False) -> Lookup:
        strategy = self.settings.cache_strategy
        key = cache_key(self.settings.cache_namespace, item)
        timer = _Timer()
        if strategy == "none" or bypass:
            detail = "request" if bypass else "strategy-none"
            value, _ = self._query(timer)
            return self._lookup(key, item, BYPASS, "database", timer, value=value, detail=detail)
        started = time.perf_counter()
        try:
            entry = self.store.get_entry(key)
        except CacheUnavailable:
            timer.add("cache", started)
            return self._degraded(key, item, timer)
        timer.add("cache", started)
        if strategy == "cache-aside":
            return self._cache_aside(key, item, entry, timer)
        return self._stale_while_revalidate(key, item, entry, timer)

    # -- strategies -----------------------------------------------------------
    def _cache_aside(self, key: str, item: int, entry: dict | None, timer: _Timer) -> Lookup:
        if entry is not None:
            return self._from_entry(key, item, entry, HIT, timer)
        value, delta = self._query(timer)
        entry = self._new_entry(item, value, delta)
        stored = self._store(key, entry, grace=False, timer=timer)
        return self._from_entry(key, item, entry, MISS, timer, source="database", stored=stored)

    def _stale_while_revalidate(
        self, key: str, item: int, entry: dict | None, timer: _Timer
    ) -> Lookup:
        now = time.time()
        if entry is None:
            started = time.perf_counter()
            lookup, shared = self._fills.do(key, lambda: self._fill(key, item, timer))
            if shared:
                timer.add("lock", started)
                return self._shared(lookup, timer)
            return lookup
        if now >= entry["soft_expiry"]:
            self._refresh_in_background(key, item, "stale")
            return self._from_entry(key, item, entry, STALE, timer)
        if self._xfetch_due(entry, now):
            self._refresh_in_background(key, item, "early")
        return self._from_entry(key, item, entry, HIT, timer)

    def _fill(self, key: str, item: int, timer: _Timer) -> Lookup:
        """Fill a cold key once across all processes (Redis lock), or wait for it."""
        deadline = time.monotonic() + self.settings.cache_lock_wait_seconds
        lock = self.store.lock(lock_key(key), self.settings.lock_ttl_ms / 1000)
        polls = 0
        waited = False
        while True:
            started = time.perf_counter()
            try:
                if self.store.acquire(lock):
                    timer.add("lock", started)
                    return self._fill_holding(lock, key, item, timer, waited)
                entry = self.store.get_entry(key)
            except CacheUnavailable:
                timer.add("lock", started)
                return self._degraded(key, item, timer)
            if entry is not None:
                timer.add("lock", started)
                metrics.LOCK_WAITS.labels("filled").inc()
                return self._from_entry(key, item, entry, MISS, timer, detail="collapsed")
            if time.monotonic() >= deadline:
                timer.add("lock", started)
                metrics.LOCK_WAITS.labels("timeout").inc()
                value, delta = self._query(timer)
                return self._lookup(key, item, MISS, "database", timer, value=value,
                                    detail="lock-timeout")
            waited = True
            time.sleep(_WAIT_POLL_SECONDS[min(polls, len(_WAIT_POLL_SECONDS) - 1)])
            polls += 1
            timer.add("lock", started)

    def _fill_holding(self, lock, key: str, item: int, timer: _Timer, waited: bool) -> Lookup:
        try:
            if waited:  # the previous holder may have filled it just before releasing
                try:
                    entry = self.store.get_entry(key)
                except CacheUnavailable:
                    entry = None
                if entry is not None:
                    metrics.LOCK_WAITS.labels("filled").inc()
                    return self._from_entry(key, item, entry, MISS, timer, detail="collapsed")
            value, delta = self._query(timer)
            entry = self._new_entry(item, value, delta)
            stored = self._store(key, entry, grace=True, timer=timer)
            return self._from_entry(key, item, entry, MISS, timer, source="database",
                                    stored=stored)
        finally:
            self.store.release(lock)

    def _refresh_in_background(self, key: str, item: int, trigger: str,
                               local_only: bool = False) -> None:
        flight = f"local:{key}" if local_only else key
        with self._refreshing_lock:
            if flight in self._refreshing:
                return
            self._refreshing.add(flight)
        task = self._refresh_local if local_only else self._refresh
        try:
            self._refresher.submit(task, key, item, trigger, flight)
        except RuntimeError:  # executor shut down: the worker is exiting
            with self._refreshing_lock:
                self._refreshing.discard(flight)

    def _refresh(self, key: str, item: int, trigger: str, flight: str) -> None:
        """One refresh across all processes; on failure the stale entry stays."""
        try:
            lock = self.store.lock(lock_key(key), self.settings.lock_ttl_ms / 1000)
            if not self.store.acquire(lock):
                metrics.REFRESHES.labels(trigger, "skipped").inc()
                return
            try:
                entry = self._query_entry(item, _Timer())
                self.store.set_json(key, entry, self._hard_ttl_ms(entry))
                self._remember(key, entry)
            finally:
                self.store.release(lock)
            metrics.REFRESHES.labels(trigger, "ok").inc()
        except (DatabaseUnavailable, CacheUnavailable) as exc:
            metrics.REFRESHES.labels(trigger, "error").inc()
            log.warning("background refresh failed", extra={"key": key, "reason": str(exc)})
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(flight)

    def _refresh_local(self, key: str, item: int, trigger: str, flight: str) -> None:
        """Refresh this worker's copy while Redis is unavailable."""
        try:
            entry, _ = self._db_flights.do(key, lambda: self._query_entry(item, _Timer()))
            self._remember(key, entry)
            metrics.REFRESHES.labels(trigger, "ok").inc()
        except DatabaseUnavailable as exc:
            metrics.REFRESHES.labels(trigger, "error").inc()
            log.warning("local refresh failed", extra={"key": key, "reason": str(exc)})
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(flight)

    def _degraded(self, key: str, item: int, timer: _Timer) -> Lookup:
        """Redis is unavailable: this worker's last copy, else one database query.

        A stale local copy is served at once while one local refresh runs, as
        in ``swr``; a worker that has never seen the key queries the database
        behind per-process single flight, so an outage costs about one query
        per key, worker and TTL.
        """
        with self._local_lock:
            entry = self._local.get(key)
        if entry is not None:
            if time.time() >= entry["soft_expiry"]:
                self._refresh_in_background(key, item, "stale", local_only=True)
            return self._from_entry(key, item, entry, BYPASS, timer, source="local",
                                    detail="redis-unavailable")
        entry, _ = self._db_flights.do(key, lambda: self._query_entry(item, timer))
        return self._from_entry(key, item, entry, BYPASS, timer, source="database",
                                detail="redis-unavailable")

    def _query_entry(self, item: int, timer: _Timer) -> dict[str, Any]:
        value, delta = self._query(timer)
        return self._new_entry(item, value, delta)

    # -- helpers --------------------------------------------------------------
    def _query(self, timer: _Timer) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        try:
            version = self.db.fetch_slow_version()
        except DatabaseUnavailable:
            metrics.SLOW_QUERY_SECONDS.labels("error").observe(time.perf_counter() - started)
            timer.add("db", started)
            raise
        elapsed = time.perf_counter() - started
        metrics.SLOW_QUERY_SECONDS.labels("ok").observe(elapsed)
        timer.add("db", started)
        return {"version": version}, elapsed

    def _jittered_ttl(self) -> float:
        """Up to CACHE_JITTER_RATIO shorter than the TTL, never longer, so keys
        filled together do not all expire together."""
        return self.settings.cache_ttl_seconds * (
            1 - self.settings.cache_jitter_ratio * random.random()
        )

    def _hard_ttl_ms(self, entry: dict[str, Any]) -> int:
        """Redis keeps an entry until soft expiry + grace (the stale window)."""
        soft_ttl = entry["soft_expiry"] - entry["created"]
        return int((soft_ttl + self.settings.cache_grace_seconds) * 1000)

    def _new_entry(self, item: int, value: dict[str, Any], delta: float) -> dict[str, Any]:
        now = time.time()
        return {
            "format": ENTRY_FORMAT,
            "item": item,
            "value": value,
            "created": now,
            "soft_expiry": now + self._jittered_ttl(),
            "delta": delta,
        }

    def _store(self, key: str, entry: dict[str, Any], grace: bool, timer: _Timer) -> bool:
        soft_ttl = entry["soft_expiry"] - entry["created"]
        ttl_ms = self._hard_ttl_ms(entry) if grace else int(soft_ttl * 1000)
        started = time.perf_counter()
        try:
            self.store.set_json(key, entry, ttl_ms)
            return True
        except CacheUnavailable:
            return False
        finally:
            timer.add("cache", started)

    def _remember(self, key: str, entry: dict[str, Any]) -> None:
        with self._local_lock:
            self._local[key] = entry

    def _xfetch_due(self, entry: dict[str, Any], now: float) -> bool:
        """XFetch: refresh early when ``now - delta * beta * ln(rand()) >= expiry``.

        The lead is capped at half the entry's TTL: at R reads per second
        XFetch's expected lead grows like ``delta * ln(R * delta)``, so under
        heavy load with a TTL close to the query time it would refresh
        back-to-back. Capped, a hot key is refreshed about once per TTL.
        """
        beta = self.settings.xfetch_beta
        if beta <= 0:
            return False
        lead = -entry["delta"] * beta * math.log(1.0 - random.random())
        lead = min(lead, (entry["soft_expiry"] - entry["created"]) / 2)
        return now + lead >= entry["soft_expiry"]

    def _from_entry(self, key, item, entry, result, timer, source="redis", detail="",
                    stored=False) -> Lookup:
        if source != "local":  # re-inserting would extend a local copy's life
            self._remember(key, entry)
        return self._lookup(key, item, result, source, timer, value=entry["value"], detail=detail,
                            ttl=entry["soft_expiry"] - time.time(), stored=stored)

    def _lookup(self, key, item, result, source, timer, *, value, detail="", ttl=None,
                stored=False) -> Lookup:
        return Lookup(value=value, item=item, key=key, strategy=self.settings.cache_strategy,
                      result=result, source=source, detail=detail, ttl_remaining=ttl,
                      stored=stored, timings_ms=dict(timer.timings))

    def _shared(self, lookup: Lookup, timer: _Timer) -> Lookup:
        """A thread that joined another thread's fill: same value, its own timings."""
        return Lookup(value=lookup.value, item=lookup.item, key=lookup.key,
                      strategy=lookup.strategy, result=lookup.result, source=lookup.source,
                      detail="collapsed" if lookup.result == MISS else lookup.detail,
                      ttl_remaining=lookup.ttl_remaining, stored=False,
                      timings_ms=dict(timer.timings))

    def shutdown(self) -> None:
        self._refresher.shutdown(wait=False, cancel_futures=True)

