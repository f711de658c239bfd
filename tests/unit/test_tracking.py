"""Tier 1 and its coherence: tracking invalidations from a real Valkey."""

from __future__ import annotations

import time

import pytest
import redis

from cachelab.engine.entry import Entry
from cachelab.engine.keys import item_target, version_target
from cachelab.engine.local import LocalEntries
from cachelab.engine.lookup import MEMORY, REDIS
from cachelab.engine.tracking import Tracking
from cachelab.engine.writes import Writer
from loadtest.stack import wait_until
from tests.helpers import free_port
from tests.unit.fakes import FakeClock


def fresh_entry(fence: int, value: str = "v") -> Entry:
    return Entry(
        value={"version": value, "item": 1},
        fence=fence,
        ttl=10.0,
        grace=60.0,
        delta=0.1,
        created=0.0,
    )


def test_the_second_read_is_served_from_memory(settings, db, services):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 1)
    assert service.get(target).result == "MISS"
    first = service.get(target)
    assert (first.result, first.tier) == ("HIT", REDIS)
    second = service.get(target)
    assert (second.result, second.tier) == ("HIT", MEMORY)
    assert db.calls["version"] == 1


def test_a_write_by_another_process_invalidates_memory_within_milliseconds(
    settings, db, services, raw
):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 2)
    service.get(target)
    service.get(target)
    assert service.get(target).tier == MEMORY
    lags = []
    for n in range(50):
        raw.set(target.key, fresh_entry(10_000 + n, f"new-{n}").encode(), px=70_000)
        written = time.perf_counter()
        # The next read must not return the old value from memory.
        while True:
            lookup = service.get(target)
            if lookup.value["version"] == f"new-{n}":
                break
            assert time.perf_counter() - written < 0.5, "memory served an old value too long"
        lags.append(time.perf_counter() - written)
        service.get(target)  # back into memory for the next round
    lags.sort()
    assert lags[len(lags) // 2] < 0.005 and lags[-1] < 0.1, lags


def test_flush_drops_every_copy(settings, db, services, raw):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 3)
    service.get(target)
    service.get(target)
    raw.flushall()
    wait_until(
        lambda: service.local.last_copy(target.key) is None,
        2,
        interval=0.01,
        message="the flush to reach the listener",
    )
    assert service.get(target).result == "MISS" and db.calls["version"] == 2


def test_a_lost_tracking_connection_stops_memory_until_it_is_back(settings, db, services, raw):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 4)
    service.get(target)
    service.get(target)
    assert service.get(target).tier == MEMORY
    for client in raw.client_list():
        if client.get("name") == "cachelab-tracking":
            raw.client_kill_filter(_id=client["id"])
    # Until the listener is back, nothing it may have missed is served from memory.
    wait_until(
        lambda: service.get(target).tier == REDIS,
        2,
        interval=0.01,
        message="memory to stop serving after the connection loss",
    )
    wait_until(lambda: service.tracking.active, 5, interval=0.01, message="reconnection")
    service.get(target)
    assert service.get(target).tier == MEMORY


def test_without_tracking_memory_serves_for_at_most_the_fallback_ttl(settings, db, services):
    clock = FakeClock()
    service = services(settings, db, clock=clock, cache_tracking="off", memory_fallback_ttl_ms=1000)
    assert service.tracking.status()["mode"] == "off"
    target = version_target(settings.cache_namespace, 5)
    service.get(target)
    service.get(target)
    assert service.get(target).tier == MEMORY
    clock.advance(0.99)
    assert service.get(target).tier == MEMORY
    clock.advance(0.02)
    assert service.get(target).tier == REDIS  # bounded: back to Redis after 1 s


def test_a_server_that_refuses_tracking_is_detected_as_fallback(settings, db, services, raw):
    raw.execute_command(
        "ACL",
        "SETUSER",
        "notrack",
        "on",
        ">secret-password",
        "~*",
        "&*",
        "+@all",
        "-client|tracking",
    )
    try:
        url = settings.redis_url.replace("redis://", "redis://notrack:secret-password@")
        service = services(settings, db, start=False, redis_url=url)
        service.start()
        wait_until(
            lambda: service.tracking.status()["mode"] == "fallback",
            5,
            interval=0.01,
            message="fallback mode",
        )
        assert "tracking" in service.tracking.status()["reason"].lower()
        target = version_target(settings.cache_namespace, 6)
        service.get(target)
        local = service.local.servable(target.key)
        assert local is not None
        assert local.servable_until - time.monotonic() <= settings.memory_fallback_ttl_ms / 1000
    finally:
        raw.execute_command("ACL", "DELUSER", "notrack")


def test_a_copy_read_before_an_invalidation_is_never_kept():
    clock = FakeClock()
    local = LocalEntries(10, 1.0, clock)
    local.reset(tracking=True)
    snapshot = local.snapshot("k")
    local.invalidate(["k"])  # another process wrote while our read was in flight
    assert local.put("k", fresh_entry(1), 10, 70, snapshot) is None
    snapshot = local.snapshot("k")
    assert local.put("k", fresh_entry(2), 10, 70, snapshot) is not None
    servable = local.servable("k")
    assert servable is not None and servable.entry.fence == 2


def test_serving_a_copy_never_extends_its_life():
    """Defect: every hit re-inserted the copy and restarted its local TTL."""
    clock = FakeClock()
    local = LocalEntries(10, 1.0, clock)
    local.reset(tracking=True)
    local.put("k", fresh_entry(1), 10, 70, local.snapshot("k"))
    for _ in range(12):
        clock.advance(6.0)
        local.put("k", fresh_entry(1), 10, 70, local.snapshot("k"))  # served again and again
        if clock.now - 1000 >= 10:
            assert local.servable("k") is None  # soft expiry counted from the first read
    assert clock.now - 1000 == 72
    assert local.last_copy("k") is None  # and so is the hard expiry


@pytest.mark.parametrize("size", [1, 3])
def test_the_copies_are_bounded(size):
    local = LocalEntries(size, 1.0, FakeClock())
    for n in range(10):
        local.put(f"k{n}", fresh_entry(n), 10, 70, local.snapshot(f"k{n}"))
    assert len(local) == size


def test_failed_reconnection_attempts_do_not_keep_invalidating_copies(settings, db, services):
    """Each failed attempt used to reset the copies again, so during an outage a
    worker could never keep a refreshed copy and queried on every read."""

    service = services(settings, db, start=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    service.start()
    wait_until(
        lambda: service.tracking.status()["mode"] == "down",
        5,
        interval=0.01,
        message="the listener to give up once",
    )
    snapshot = service.local.snapshot("k")
    attempts = service.tracking.attempts
    wait_until(
        lambda: service.tracking.attempts >= attempts + 3,
        5,
        interval=0.01,
        message="three more failed attempts",
    )
    assert service.tracking.status()["mode"] == "down"
    assert service.local.put("k", fresh_entry(1), 10, 70, snapshot) is not None


def test_a_request_that_finds_the_connection_dead_reports_tracking_down(settings, raw):
    """sync() on a request thread may be the first to see the connection gone: the
    mode must say so at once, or the listener's later reconnection (which resets
    the copies) races requests that already trusted ``active``."""
    local = LocalEntries(size=10, fallback_ttl=1.0, clock=time.monotonic)
    tracking = Tracking(
        redis.Redis.from_url(settings.redis_url),
        f"{settings.cache_namespace}:v2:",
        local,
        heartbeat=30.0,
    )
    tracking._connect()  # connected, but no listener thread: only sync() reads the socket
    tracking._set_mode("tracking", "")
    try:
        assert tracking.active and local.tracking
        for client in raw.client_list():
            if client.get("name") == "cachelab-tracking":
                raw.client_kill_filter(_id=client["id"])

        def noticed() -> bool:
            tracking.sync()
            return not local.tracking

        wait_until(noticed, 2, interval=0.01, message="sync() to notice the dead connection")
        assert not tracking.active and tracking.status()["mode"] == "down"
    finally:
        tracking._disconnect()


@pytest.mark.parametrize("mode", ["delete", "write-through"])
def test_a_worker_without_its_listener_never_serves_a_read_your_writes_item_from_memory(
    settings, db, services, mode
):
    """Another container's write must reach the next read even while this worker's
    listener is still starting (or down, or refused): tier 1's bounded fallback is
    for data without that promise (found in CI: 1 read-your-writes violation in
    116 write-through writes, 0.6-0.8 s stale, right after the app started)."""
    clock = FakeClock()
    writer = services(settings, db)
    reader = services(settings, db, clock=clock, start=False)  # listener not connected
    assert reader.tracking.status()["mode"] == "starting"
    item = item_target(settings.cache_namespace, 5, mode)
    page = version_target(settings.cache_namespace, 7)
    for target in (item, page):
        reader.get(target)  # the fill
        reader.get(target)  # from Redis: an uncovered copy stays in memory
    assert reader.get(page).tier == MEMORY  # the bounded fallback still serves the page
    written = Writer(writer).put(5, "new", mode, guarded=True)
    clock.advance(0.1)  # well inside MEMORY_FALLBACK_TTL_MS
    assert reader.get(item).value["version"] == written.item["version"] == 2
