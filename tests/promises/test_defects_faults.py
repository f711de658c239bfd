"""Issue 17's defects under Redis faults and slow fills, one named test each.

The faults are real (a failover to a replica for READONLY, CLIENT PAUSE,
volatile-lru eviction); queries are counted by the fake database, on its side.
Each docstring names the defect the test caught on the old engine; a test
is a strict ``xfail`` while the engine still has its defect.
"""

from __future__ import annotations

import pytest

from loadtest.stack import wait_until

from .runner import purge

pytestmark = pytest.mark.unit


def test_a_failover_never_answers_500(lab, node):
    """Old engine (issue 17): on READONLY, connection_pool.disconnect() closes connections other
    threads are using; they fail with ValueError (I/O operation on closed file), which
    RedisStore._call does not catch: HTTP 500."""
    worker, other = lab.workers_with(2)
    lab.read(other, 4)  # item 4's entry in Redis: payload item-4-v1
    hold = worker.faults.hold_reply(b"item-4-v1")
    reading = lab.background(lab.read, worker, 4)  # mid-command when the pool is dropped
    assert hold.reached.wait(5), "the read never reached Redis"
    with node.readonly():
        put = lab.write(worker, 3)  # its write gets READONLY
        hold.release()
        read = reading.result(timeout=10)
    assert put.status == 200 and read.status == 200, (
        f"during a failover: {put.line(0)} / {read.line(0)}"
    )


def test_an_evicted_tombstone_never_lets_an_older_fill_in(lab, db, node):
    """Old engine (issue 17): volatile-lru evicts a tombstone (a key with a TTL); a fill that read
    the row before the PUT is then accepted and the old version served until its TTL."""
    reader, writer = lab.workers_with(2)
    gate = db.gate(1)
    filling = lab.filling(reader, 1, "delete")  # read v1, then waits
    put = lab.write(writer, 1, "delete")  # tombstone of v2
    assert put.detail == "tombstone", put.line(0)
    node.evict_volatile()  # memory pressure: every key with a TTL goes
    gate.set()
    filling.result(timeout=10)  # began before the PUT: v1 is right for it
    after = lab.read(writer, 1, "delete")
    assert after.value >= put.value, (
        f"v{after.value} served ({after.cache}/{after.source}) after the PUT of v{put.value}"
    )


def test_an_evicted_lease_never_lets_a_second_query_run(lab, db, node):
    """Old engine (issue 17), and the redesign until leases lost their Redis TTL:
    volatile-lru evicts a lease (SET NX PX, a key with a TTL); another worker
    takes it and runs the query a second time."""
    first, second = lab.workers_with(2)
    db.item_latency[2] = 0.8  # the holder's query
    filling = lab.filling(first, 2, "delete")
    node.evict_volatile()
    waiting = lab.background(lab.read, second, 2, "delete")
    assert filling.result(timeout=10).status == 200
    assert waiting.result(timeout=10).status == 200
    queries = db.item_queries(2)
    assert len(queries) == 1, f"{len(queries)} queries of item 2: {queries}"


def test_waiters_never_query_beside_a_renewed_lease_however_slow_the_query(lab, db):
    """Old engine: with the database slower than CACHE_LOCK_WAIT_SECONDS, every
    waiting worker gave up on a lease that was alive and renewed and ran the
    query itself (6 workers: 6 queries). Documented now: a waiter answers 503
    ``fill-timeout`` at its deadline, and never queries beside a live lease."""
    workers = lab.workers_with(6, cache_lock_wait_seconds=0.2, cache_lock_lease_seconds=0.45)
    db.latency = 0.6  # slower than the lock wait; the lease is renewed every 0.15 s
    answers = lab.together([lambda w=w: lab.read(w, 5, "ttl") for w in workers])
    queries = db.item_queries(5)
    assert len(queries) == 1, f"6 workers, {len(queries)} queries of one key"
    outcomes = sorted((a.status, a.detail) for a in answers)
    assert all(a.status == 200 or a.detail == "overloaded/fill-timeout" for a in answers), outcomes


def test_one_failed_renewal_does_not_lose_the_lease(lab, db, node):
    """Old engine (issue 17): one failed lease renewal (CLIENT PAUSE WRITE) marks the lease lost
    for good; it lapses and a second query runs."""
    holder, waiter = lab.workers_with(
        2, cache_lock_lease_seconds=1.2, cache_lock_wait_seconds=5.0
    )  # renewed every 0.4 s
    db.latency = 1.6
    filling = lab.filling(holder, 5, "ttl")
    node.pause(0.7, "WRITE")  # covers the first renewal; the lease outlives the pause
    wait_until(
        lambda: node.admin.set("checker:probe", "1"),  # blocks until the pause ends
        5,
        interval=0.01,
        message="the pause to end",
    )
    waited = lab.read(waiter, 5, "ttl")
    assert filling.result(timeout=10).status == 200 and waited.status == 200
    queries = db.item_queries(5)
    assert len(queries) == 1, f"{len(queries)} queries of one key across one paused renewal"


def test_a_write_through_that_lands_after_a_purge_never_leaves_an_older_version(lab):
    """Found by the checker (seed 2852868146): two writes of item 4 write the
    cache in the opposite order of their commits; the guard keeps the newer
    entry -- until ``cachelab cache purge`` (or an eviction, or a restart)
    removes it between the two, and the older write lands in an empty key:
    every reader then got the older version until its TTL, the newer PUT's
    writer included."""
    older_writer, newer_writer = lab.workers_with(2)
    hold = older_writer.faults.hold_send(b"older-payload")  # its cache write, held
    older = lab.background(lab.write, older_writer, 4, "write-through", "older-payload")
    assert hold.reached.wait(5), "the older write never reached Redis"
    newer = lab.write(newer_writer, 4, "write-through", "newer-payload")
    assert newer.detail == "written", newer.line(0)
    purge(lab.settings)
    hold.release()
    assert older.result(timeout=10).outcome == "ok"
    for worker in (older_writer, newer_writer):
        read = lab.read(worker, 4, "write-through")
        assert read.value >= newer.value, (
            f"read v{read.value} ({read.cache}/{read.source}) on {worker.name} "
            f"after the PUT of v{newer.value} returned and a purge"
        )


def test_a_fill_that_lands_after_a_purge_never_leaves_an_older_version(lab):
    """The fill's twin of the write-through race (not yet found by the checker,
    seen by reading the code after it): a fill checks the row's version, then
    writes; a PUT that commits in between writes its tombstone, and a purge
    (an eviction, a restart) removes it before the fill's write lands in the
    empty key -- the older version served after the PUT returned."""
    reader, writer = lab.workers_with(2)
    hold = reader.faults.hold_send(b"item-1-v1")  # the fill's write of v1, held
    filling = lab.background(lab.read, reader, 1, "delete")
    assert hold.reached.wait(5), "the fill never wrote"
    put = lab.write(writer, 1, "delete")
    assert put.detail == "tombstone", put.line(0)
    purge(lab.settings)
    hold.release()
    assert filling.result(timeout=10).outcome == "ok"  # v1 is right for it: it began first
    for worker in (reader, writer):
        read = lab.read(worker, 1, "delete")
        assert read.value >= put.value, (
            f"read v{read.value} ({read.cache}/{read.source}) on {worker.name} "
            f"after the PUT of v{put.value} returned and a purge"
        )
