"""Tier 1 and its coherence: tracking invalidations from a real Valkey."""

from __future__ import annotations

import threading
import time

import pytest

from cachelab.engine.keys import item_target, version_target
from cachelab.engine.model import MEMORY, REDIS, Entry
from cachelab.engine.tier1 import Tier1
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
    assert service.reads.get(target).result == "MISS"
    first = service.reads.get(target)
    assert (first.result, first.tier) == ("HIT", REDIS)
    second = service.reads.get(target)
    assert (second.result, second.tier) == ("HIT", MEMORY)
    assert db.calls["version"] == 1


def test_a_write_by_another_process_invalidates_memory_within_milliseconds(
    settings, db, services, raw
):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 2)
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    lags = []
    for n in range(50):
        raw.set(target.key, fresh_entry(10_000 + n, f"new-{n}").encode(), px=70_000)
        written = time.perf_counter()
        # The next read must not return the old value from memory.
        while True:
            lookup = service.reads.get(target)
            if lookup.value["version"] == f"new-{n}":
                break
            assert time.perf_counter() - written < 0.5, "memory served an old value too long"
        lags.append(time.perf_counter() - written)
        service.reads.get(target)  # back into memory for the next round
    lags.sort()
    assert lags[len(lags) // 2] < 0.005 and lags[-1] < 0.1, lags


def test_flush_drops_every_copy(settings, db, services, raw):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 3)
    service.reads.get(target)
    service.reads.get(target)
    raw.flushall()
    wait_until(
        lambda: service.tier1.last_copy(target.key) is None,
        2,
        interval=0.01,
        message="the flush to reach the listener",
    )
    assert service.reads.get(target).result == "MISS" and db.calls["version"] == 2


def test_a_lost_tracking_connection_stops_memory_until_it_is_back(settings, db, services, raw):
    service = services(settings, db)
    target = version_target(settings.cache_namespace, 4)
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    for client in raw.client_list():
        if client.get("name") == "cachelab-tracking":
            raw.client_kill_filter(_id=client["id"])
    # Until the listener is back, nothing it may have missed is served from memory.
    wait_until(
        lambda: service.reads.get(target).tier == REDIS,
        2,
        interval=0.01,
        message="memory to stop serving after the connection loss",
    )
    wait_until(lambda: service.tracking.active, 5, interval=0.01, message="reconnection")
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY


def test_without_tracking_memory_serves_for_at_most_the_fallback_ttl(settings, db, services):
    clock = FakeClock()
    service = services(settings, db, clock=clock, cache_tracking="off", memory_fallback_ttl_ms=1000)
    assert service.tracking.status()["mode"] == "off"
    target = version_target(settings.cache_namespace, 5)
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    clock.advance(0.99)
    assert service.reads.get(target).tier == MEMORY
    clock.advance(0.02)
    assert service.reads.get(target).tier == REDIS  # bounded: back to Redis after 1 s


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
        service.tracking.start()
        wait_until(
            lambda: service.tracking.status()["mode"] == "fallback",
            5,
            interval=0.01,
            message="fallback mode",
        )
        assert "tracking" in service.tracking.status()["reason"].lower()
        target = version_target(settings.cache_namespace, 6)
        service.reads.get(target)
        service.reads.get(target)
        assert service.reads.get(target).tier == MEMORY  # the bounded fallback
        copy = service.tier1.servable(target.key, read_your_writes=False)
        assert copy is not None and not copy.covered
    finally:
        raw.execute_command("ACL", "DELUSER", "notrack")


def tier1(clock, size: int = 10, max_bytes: int = 1 << 20) -> Tier1:
    """A tier 1 with no connection: every copy is read uncovered (fallback rules)."""
    return Tier1(size, max_bytes, fallback_ttl=1000.0, heartbeat=1.0, clock=clock)


def test_a_copy_read_before_an_invalidation_is_never_kept():
    clock = FakeClock()
    local = tier1(clock)
    snapshot = local.snapshot("k")
    local.invalidate(["k"])  # another process wrote while our read was in flight
    assert local.put("k", fresh_entry(1), 10, 70, snapshot) is None
    snapshot = local.snapshot("k")
    assert local.put("k", fresh_entry(2), 10, 70, snapshot) is not None
    servable = local.servable("k", read_your_writes=False)
    assert servable is not None and servable.entry.fence == 2


def test_a_forgotten_invalidation_number_still_refuses_older_reads():
    """Defect: per-key invalidation counters were capped; an evicted counter read
    0 again, and a read that started before that key's invalidation was kept."""
    local = tier1(FakeClock(), size=1)  # remembers 4 keys' invalidations
    snapshot = local.snapshot("k")
    local.invalidate(["k"])
    for n in range(10):  # other keys push "k"'s number out of the bounded map
        local.invalidate([f"other{n}"])
    assert local.put("k", fresh_entry(1), 10, 70, snapshot) is None
    assert local.put("k", fresh_entry(2), 10, 70, local.snapshot("k")) is not None


def test_serving_a_copy_never_extends_its_life():
    """Defect: every hit re-inserted the copy and restarted its local TTL."""
    clock = FakeClock()
    local = tier1(clock)
    local.put("k", fresh_entry(1), 10, 70, local.snapshot("k"))
    for _ in range(12):
        clock.advance(6.0)
        local.put("k", fresh_entry(1), 10, 70, local.snapshot("k"))  # served again and again
        if clock.now - 1000 >= 10:
            assert local.servable("k", False) is None  # soft expiry counted from the first read
    assert clock.now - 1000 == 72
    assert local.last_copy("k") is None  # and so is the hard expiry


@pytest.mark.parametrize("size", [1, 3])
def test_the_copies_are_bounded_in_number(size):
    local = tier1(FakeClock(), size=size)
    for n in range(10):
        local.put(f"k{n}", fresh_entry(n), 10, 70, local.snapshot(f"k{n}"))
    assert len(local) == size


def test_the_copies_are_bounded_in_bytes_prepared_bytes_included():
    """Defect: tier 1 was bounded by entry count only (1,024 items of 256 KB: 256 MiB)."""
    local = tier1(FakeClock(), size=1000, max_bytes=10_000)
    for n in range(10):
        copy = local.put(f"k{n}", fresh_entry(n), 10, 70, local.snapshot(f"k{n}"))
        assert copy is not None
        copy.keep("page", (b"x" * 1500, b"y" * 500))  # what the page view prepares
    assert local.bytes <= 10_000
    assert 3 <= len(local) <= 5  # about 2.1 kB each


def test_a_copy_larger_than_the_whole_byte_bound_is_never_kept():
    """An entry (or its prepared page) larger than LOCAL_CACHE_BYTES itself is
    served from Redis every time, and evicts nothing to make room for itself."""
    local = tier1(FakeClock(), size=1000, max_bytes=10_000)
    small = local.put("small", fresh_entry(1), 10, 70, local.snapshot("small"))
    assert small is not None
    huge = fresh_entry(2, value="x" * 20_000)
    assert local.put("huge", huge, 10, 70, local.snapshot("huge")) is None
    assert local.last_copy("huge") is None
    grown = local.put("grows", fresh_entry(3), 10, 70, local.snapshot("grows"))
    assert grown is not None
    grown.keep("page", (b"x" * 20_000,))  # its prepared page outgrows the bound
    assert local.last_copy("grows") is None
    assert local.last_copy("small") is not None and local.bytes <= 10_000


def test_a_watcher_is_woken_by_its_key_or_a_flush_and_forgotten_after():
    local = tier1(FakeClock())
    event = local.watch(["a", "b"])
    local.invalidate(["c"])
    assert not event.is_set()
    local.invalidate(["b"])
    assert event.is_set()
    event.clear()
    local.invalidate(None)  # a flush wakes every watcher
    assert event.is_set()
    local.unwatch(["a", "b"], event)
    event.clear()
    local.invalidate(["a"])
    assert not event.is_set() and local._watchers == {}


def test_the_hottest_copy_stays_when_others_come_and_go():
    """Defect: first in, first out: the hottest key went back to Redis 3 times in 300 reads."""
    local = tier1(FakeClock(), size=3)
    local.put("hot", fresh_entry(0), 10, 70, local.snapshot("hot"))
    for n in range(300):
        assert local.servable("hot", False) is not None, n
        key = f"cold{n}"
        local.put(key, fresh_entry(n + 1), 10, 70, local.snapshot(key))


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
    snapshot = service.tier1.snapshot("k")
    attempts = service.tracking.attempts
    wait_until(
        lambda: service.tracking.attempts >= attempts + 3,
        5,
        interval=0.01,
        message="three more failed attempts",
    )
    assert service.tracking.status()["mode"] == "down"
    assert service.tier1.put("k", fresh_entry(1), 10, 70, snapshot) is not None


def test_a_request_that_finds_the_connection_dead_stops_serving_memory(settings, db, services, raw):
    """sync() on a request thread may be the first to see the connection gone:
    tier 1 stops serving at once, before the listener notices."""
    service = services(settings, db, tracking_heartbeat_seconds=30.0)
    target = version_target(settings.cache_namespace, 8)
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    for client in raw.client_list():
        if client.get("name") == "cachelab-tracking":
            raw.client_kill_filter(_id=client["id"])
    wait_until(
        lambda: service.reads.get(target).tier == REDIS,
        2,
        interval=0.01,
        message="a request to notice the dead connection",
    )


def test_an_invalidation_the_listener_holds_is_applied_before_a_copy_is_served(
    settings, db, services, raw, monkeypatch
):
    """Defect (read-your-writes): sync() only read the socket when it was readable,
    so an invalidation the listener thread had read but not yet applied was
    invisible to a request, which served the old copy (15 of 300 reads stale)."""
    service = services(settings, db)
    target = item_target(settings.cache_namespace, 5, "delete")
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    applying, release = threading.Event(), threading.Event()
    original = service.tier1.invalidate

    def slow_invalidate(keys):  # the listener, between reading the message and applying it
        if keys and target.key in keys:
            applying.set()
            release.wait(5)
        original(keys)

    monkeypatch.setattr(service.tier1, "invalidate", slow_invalidate)
    other = services(settings, db)
    other.writer.put(5, "new", "delete", guarded=True)  # another worker's write
    assert applying.wait(5)  # the listener has read the invalidation
    threading.Timer(0.2, release.set).start()
    lookup = service.reads.get(target)  # a read that begins after the PUT returned
    assert lookup.value["version"] == 2 and lookup.tier != MEMORY


def test_a_silently_dead_connection_stops_memory_within_the_heartbeat(settings, db, services, raw):
    """Defect: a connection that stopped answering (no FIN) left copies servable
    for the heartbeat plus a 1 s read timeout, not the documented heartbeat."""
    heartbeat = 0.3
    service = services(settings, db, tracking_heartbeat_seconds=heartbeat)
    target = version_target(settings.cache_namespace, 9)
    service.reads.get(target)
    service.reads.get(target)
    assert service.reads.get(target).tier == MEMORY
    raw.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # nothing answers, nothing closes
    paused = time.monotonic()
    wait_until(
        lambda: service.tier1.servable(target.key, read_your_writes=False) is None,
        heartbeat * 3,
        interval=0.005,
        message="memory to stop serving",
    )
    assert time.monotonic() - paused <= heartbeat + 0.1


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
        reader.reads.get(target)  # the fill
        reader.reads.get(target)  # from Redis: an uncovered copy stays in memory
    assert reader.reads.get(page).tier == MEMORY  # the bounded fallback still serves the page
    written = writer.writer.put(5, "new", mode, guarded=True)
    clock.advance(0.1)  # well inside MEMORY_FALLBACK_TTL_MS
    assert reader.reads.get(item).value["version"] == written.item["version"] == 2


@pytest.mark.parametrize("strategy", ["swr", "two-tier"])
def test_a_purge_in_flight_is_never_undone_by_a_write_back(
    settings, db, services, raw, monkeypatch, strategy
):
    """Defect: `cachelab cache purge` could be undone by reads in flight: a read
    found nothing in Redis before this worker had applied the purge's
    invalidation, took its copy for a survivor of a restart and wrote it back."""
    service = services(settings, db, cache_strategy=strategy)
    target = version_target(settings.cache_namespace, 12)
    service.reads.get(target)
    service.reads.get(target)  # a copy Redis confirmed: it may be written back after a restart
    applying, release = threading.Event(), threading.Event()
    original = service.tier1.invalidate

    def slow_invalidate(keys):
        if keys and target.key in keys:
            applying.set()
            release.wait(5)
        original(keys)

    monkeypatch.setattr(service.tier1, "invalidate", slow_invalidate)
    raw.unlink(target.key)  # the purge
    assert applying.wait(5)  # the listener has read the invalidation, not applied it yet
    threading.Timer(0.2, release.set).start()
    lookup = service.reads.get(target)
    assert lookup.detail != "reseeded" and lookup.result == "MISS"
    assert db.calls["version"] == 2
