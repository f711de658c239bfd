"""The harness' only door into the engine: everything engine-specific is here.

The engine is being rewritten (issue 17). What stays: ``create_app(settings,
db, store)``, the HTTP API and ``Settings``. Everything else the harness needs
is reached from this module alone, so a new engine means editing this file,
not the checker. What it needs, and where the old engine gives it:

1. **A store on a Redis client the harness made**, so every connection of a
   worker -- its pool's and its tracking listener's -- goes through
   :mod:`.chaos`: ``make_client(settings)`` (the engine's own pool settings:
   timeouts, no retries) whose pool's ``connection_class`` and
   ``connection_kwargs`` the harness replaces, and ``RedisStore(settings,
   client=...)``. The tracking listener must build its connection from
   ``pool.connection_class(**pool.connection_kwargs, ...)`` (or otherwise
   through that pool); it is recognised on the wire by its ``CLIENT
   TRACKING`` command, not by a name.
2. **The database interface** (implemented by :class:`.fakedb.DatabaseView`):
   ``fetch_item(id) -> dict | None`` (``id``, ``version``, ``payload``,
   ``updated_at``: the slow query, counted), ``fetch_slow_version() -> str``
   (counted), ``update_item(id, payload) -> dict | None``, ``item_version(id)``
   and ``max_item_id()`` (cheap lookups, not counted), ``ping(timeout)``;
   failures raised as :class:`DatabaseUnavailable`. A method the engine adds
   goes into ``DatabaseView``.
3. **The HTTP API's fields**: ``/api/items/<id>`` answers ``cache``
   (HIT/STALE/MISS/BYPASS), ``source`` (memory/redis/database/local) and
   ``item.version``; ``/api/version`` answers ``version``; every cached answer
   has an ``ETag`` naming its entry generation; a 503 has ``error``
   ``overloaded`` or ``database_unavailable``; a PUT answers ``cache_action``,
   and :data:`PROMISED_ACTIONS` are those after which read-your-writes holds
   (docs/caching.md: ``failed`` promises nothing). ``/readyz`` tells whether a
   worker's tracking listener is connected and its breaker closed
   (:func:`settled`), how many invalidations it applied and how many copies
   tier 1 holds.
4. **Settings the promises depend on**: how long an absent id is cached as
   "not found" (:func:`not_found_seconds`), and the names of the settings that
   bound tier 1 in bytes and the refresh queue (:data:`TIER1_BYTES_SETTING`,
   :data:`REFRESH_QUEUE_SETTING`), which some named tests set small.
5. **Defects still open** (:data:`OPEN_DEFECTS`), each tracked by a named
   strict-xfail test, granted by the checker until fixed.
6. **Where an entry lives in Redis and how its freshness is kept**
   (:func:`entry_key`, :func:`version_key`, :func:`make_stale`), for the few
   named tests that inspect or age one entry directly; **the PostgreSQL pool**
   (``cachelab.postgres.database.Database`` over ``psycopg2.connect``), for
   the test of the pool's own rules (:func:`real_database`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import redis
from flask import Flask

from cachelab.config import Settings
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.store import RedisStore, make_client
from cachelab.postgres.database import Database, DatabaseUnavailable
from cachelab.web.app import create_app, shutdown

from .chaos import NetworkFaults, install

__all__ = [
    "DatabaseUnavailable",
    "OPEN_DEFECTS",
    "PROMISED_ACTIONS",
    "REFRESH_QUEUE_SETTING",
    "Settings",
    "TIER1_BYTES_SETTING",
    "entry_key",
    "follower_slots",
    "invalidations_heard",
    "make_stale",
    "not_found_seconds",
    "tier1_entries",
    "version_key",
    "quiet_logs",
    "real_database",
    "refresh_queue_bound",
    "settled",
    "start_worker",
    "stop_workers",
]

# A PUT's cache_action after which read-your-writes holds (delete, write-through).
PROMISED_ACTIONS = frozenset({"tombstone", "written", "kept-newer"})

# Defects the engine still has, each with its named strict-xfail test: the
# checker grants them (so the long profile judges everything else) until the
# fix lands; then remove the name here and the xfail mark there.
OPEN_DEFECTS: frozenset[str] = frozenset()  # none today; e.g. {"evicted-lease"} (checkers.py)

# Issue 17 item 3: the setting that bounds tier 1 in bytes (LOCAL_CACHE_BYTES).
TIER1_BYTES_SETTING = "local_cache_bytes"
# The setting that bounds the refreshes waiting for a refresh thread (CACHE_REFRESH_QUEUE).
REFRESH_QUEUE_SETTING = "refresh_queue"


def not_found_seconds(settings: Settings) -> float:
    """How long an absent id inside the table's range stays cached as "not found"
    (NEGATIVE_TTL_SECONDS): at most one query per id in that time."""
    return float(settings.negative_ttl_seconds)


def follower_slots(settings: Settings) -> int:
    """How many requests of a worker may wait for one fill in flight
    (CACHE_FOLLOWER_SLOTS): past it, a 503 ``overloaded`` is documented."""
    return int(settings.follower_slots)


def waiting_followers(app: Flask) -> int:
    """How many requests of this worker are waiting for a fill in flight."""
    return int(app.extensions["cachelab"].bulkhead.in_use["follower"])


def refresh_queue_bound(settings: Settings) -> int:
    """How many background refreshes may wait for a refresh thread."""
    return int(getattr(settings, REFRESH_QUEUE_SETTING))


def start_worker(settings: Settings, db: Any, faults: NetworkFaults) -> tuple[Flask, redis.Redis]:
    """One worker: a Flask app with its own pool (under ``faults``), tier 1,
    tracking listener and database view, as gunicorn's ``create_app`` makes it."""
    client = install(make_client(settings), faults)
    app = create_app(settings, db=db, store=RedisStore(settings, client=client))
    logging.getLogger().setLevel(logging.ERROR)  # create_app set INFO: a line per miss
    return app, client


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The app's INFO and WARNING lines are thousands per run: keep errors only
    while the checker runs, and put the level back after."""
    root = logging.getLogger()
    level = root.level
    try:
        yield
    finally:
        root.setLevel(level)


def stop_workers(clients: list[redis.Redis]) -> None:
    """Worker exit for every app made so far (gunicorn's worker_exit), then close
    the pools' connections so the server forgets them."""
    shutdown()
    for client in clients:
        client.connection_pool.disconnect()


def settled(readyz: dict) -> bool:
    """A worker's /readyz says: Redis up, breaker not open (half-open closes on
    the next request), tracking connected."""
    cache = readyz.get("redis", {})
    return (
        cache.get("status") == "up"
        and cache.get("breaker") in ("closed", "half-open")
        and cache.get("memory_tier", {}).get("mode") == "tracking"
    )


def invalidations_heard(readyz: dict) -> int:
    """How many invalidation messages a worker's tracking listener has applied."""
    return int(readyz["redis"]["memory_tier"]["invalidations"])


def tier1_entries(readyz: dict) -> int:
    """How many copies a worker's tier 1 holds."""
    return int(readyz["redis"]["memory_tier"]["entries"])


def real_database(settings: Settings, monkeypatch: Any, connect: Any) -> Database:
    """The engine's own PostgreSQL pool, its driver's ``connect`` replaced (the
    unit layer has no PostgreSQL): for the pool's own rules."""
    monkeypatch.setattr(psycopg2, "connect", connect)
    return Database(settings)


def entry_key(settings: Settings, item: int, mode: str) -> str:
    """The Redis key of an item's entry in one invalidation mode."""
    return item_target(settings.cache_namespace, item, mode).key


def version_key(settings: Settings, item: int) -> str:
    """The Redis key of ``/api/version?item=<item>``'s entry."""
    return version_target(settings.cache_namespace, item).key


def make_stale(client: redis.Redis, settings: Settings, key: str) -> bool:
    """Age an entry in Redis past its soft TTL, into its grace (freshness is the
    PTTL minus the grace), as if its TTL had run out; True if it was there."""
    return bool(client.pexpire(key, int(settings.cache_grace_seconds * 1000)))
