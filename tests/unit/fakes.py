"""Controllable fakes of the unit layer: a clock, the database, engines, and
the small helpers the engine tests share (a counter's value, a Redis call
that fails, a lease written as the scripts write it).

Simulated where the thing is what is being simulated (latency, failures,
counts, time); everything Redis does is a real Valkey process (conftest.py).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import cast

from cachelab.config import Settings
from cachelab.engine.cluster import ClusterStore
from cachelab.engine.store import CacheUnavailable, RedisStore
from cachelab.postgres.database import Database, DatabaseUnavailable
from cachelab.web.app import build_lab
from cachelab.web.context import Lab
from loadtest.stack import wait_until


def redis_now_ms(raw) -> int:
    """The Redis server's clock, in ms (the leases' expiries are on it)."""
    seconds, micros = raw.time()
    return seconds * 1000 + micros // 1000


def set_lease(raw, lease_key: str, token: str, ms_left: int) -> None:
    """A lease as the scripts keep it: ``<token> <expiry ms>`` (no PX: not evictable)."""
    raw.set(lease_key, f"{token} {redis_now_ms(raw) + ms_left}")


def counter(child) -> float:
    """A Prometheus counter's (or labelled child's) current value."""
    return child._value.get()


def unavailable(*_args, **_kwargs):
    """Stands in for a store method: Redis did not answer."""
    raise CacheUnavailable("injected: Redis did not answer")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class FakeDatabase:
    """PostgreSQL as the engine sees it, controllable: a gate or a latency per
    query, failures on demand, call and concurrency counts."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.gate: threading.Event | None = None
        self.fail = False
        self.concurrent = 0
        self.max_concurrent = 0
        self.started = threading.Semaphore(0)  # released when a query starts
        self.items: dict[int, dict] = {i: self._row(i, 1, "x" * 8) for i in range(1, 11)}
        self._lock = threading.Lock()

    @staticmethod
    def _row(item_id: int, version: int, payload: str) -> dict:
        return {
            "id": item_id,
            "version": version,
            "payload": payload,
            "updated_at": f"2026-01-01T00:00:{version:02d}+00:00",
        }

    def _run(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.started.release()
        try:
            if self.gate is not None and not self.gate.wait(30):
                raise DatabaseUnavailable("fake gate never opened")
            if self.delay:
                time.sleep(self.delay)  # the query's latency is what is simulated
            if self.fail:
                raise DatabaseUnavailable("fake database down")
        finally:
            with self._lock:
                self.concurrent -= 1

    def fetch_slow_version(self) -> str:
        self._run("version")
        return "PostgreSQL 99.0 (fake)"

    def fetch_item(self, item_id: int) -> dict | None:
        row = dict(self.items[item_id]) if item_id in self.items else None  # read first
        self._run("item")
        return row

    def update_item(self, item_id: int, payload: str) -> dict | None:
        with self._lock:
            if item_id not in self.items:
                return None
            row = self._row(item_id, self.items[item_id]["version"] + 1, payload)
            self.items[item_id] = row
        return dict(row)

    def item_version(self, item_id: int) -> int | None:
        """The row's version now (a cheap lookup: not counted as a slow query)."""
        if self.fail:
            raise DatabaseUnavailable("fake database down")
        row = self.items.get(item_id)
        return None if row is None else int(row["version"])

    def max_item_id(self) -> int:
        if self.fail:
            raise DatabaseUnavailable("fake database down")
        return max(self.items, default=0)

    def ping(self, timeout: float = 1.0) -> None:
        if self.fail:
            raise DatabaseUnavailable("fake database down")


class Services:
    """Engines ("workers", each a :class:`Lab` wired as the app factory wires it)
    made by a test, shut down after it."""

    def __init__(self) -> None:
        self.made: list[Lab] = []

    def __call__(
        self,
        settings: Settings,
        db: FakeDatabase,
        clock=time.monotonic,
        rng: random.Random | None = None,
        wall=time.time,
        start: bool = True,
        **overrides,
    ) -> Lab:
        if overrides:
            settings = replace(settings, **overrides)
        store = ClusterStore(settings) if settings.redis_cluster else RedisStore(settings)
        lab = build_lab(
            settings,
            cast(Database, db),  # the fake answers what the engine asks of Database
            store,
            clock=clock,
            rng=rng or random.Random(7),
            wall=wall,
        )
        self.made.append(lab)
        if start:
            lab.store.start()
            lab.tracking.start()
            if settings.cache_tracking == "auto":
                wait_until(
                    lambda: lab.tracking.active,
                    5,
                    interval=0.01,
                    message="the tracking listener to connect",
                )
        return lab

    def close(self) -> None:
        for lab in self.made:
            lab.shutdown()
            if isinstance(lab.store, ClusterStore):
                lab.store.client.close()
            else:
                lab.store.client.connection_pool.disconnect()
