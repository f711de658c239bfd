"""Issue 17's defects of misses: absent rows, the bulkhead, background refreshes.

Queries are counted by the fake database (rows 1..6 and 9 exist: 7 and 8 are
absent rows inside the table's range, ids above 9 are outside it). Each
docstring names the defect the test caught on the old engine; a test is a
strict ``xfail`` while the engine still has its defect.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.stack import wait_until

from . import adapter
from .checkers import Context, not_found
from .schedule import Config

pytestmark = pytest.mark.unit


def test_an_absent_row_is_queried_once_then_cached_as_not_found(lab, db):
    """Old engine (issue 17): a missing row is never cached, so every repeat runs the slow query
    again."""
    worker = lab.worker()
    answers = [lab.read(worker, 7, "ttl") for _ in range(3)]
    assert [a.status for a in answers] == [404] * 3
    assert len(db.item_queries(7)) == 1, f"{len(db.item_queries(7))} slow queries of absent row 7"


def test_a_not_found_that_redis_refused_to_store_explains_the_next_query(lab, db, node):
    """The checker's own fault, found by it (seed 4031739102, CI): a read of an absent row
    whose lease write Redis refused (OOM) queries, answers 404 BYPASS and stores nothing; the
    harness read no cache status from a 404, so the next read's query was judged a repeat
    within the negative-caching time."""
    worker = lab.worker()
    with node.full():  # every write refused: the lease cannot be taken
        first = lab.read(worker, 8, "ttl")
    worker.wait_settled()
    second = lab.read(worker, 8, "ttl")
    assert (first.status, second.status) == (404, 404)
    assert len(db.item_queries(8)) == 2, "setup: the first answer was stored after all"
    assert (first.cache, first.source, first.stored) == ("BYPASS", "database", False)
    assert (second.cache, second.stored) == ("MISS", True), second.line(0)
    context = Context(lab.settings, Config(), lab.history, db, {})
    assert not_found(context) == [], [v.text for v in not_found(context)]


def test_an_id_above_the_table_gets_404_without_the_slow_query(lab, db):
    """Old engine (issue 17): ids outside the seeded range (the API accepts up to 1,000,000) run
    the slow query; the database knows the range."""
    worker = lab.worker()
    assert lab.read(worker, 5000, "ttl").status == 404
    assert db.item_queries(5000) == [], "the slow query ran for an id above the table"


def test_an_id_above_the_table_asked_just_after_a_database_failure_skips_the_slow_query(lab, db):
    """Found by the checker (CI, seed 2271205523): a worker that had not learned the table's
    range asked for it while PostgreSQL failed, and for the next second every id, even one above
    the table, let the slow query decide: once the database was back, ids 50 and 51 ran it."""
    worker = lab.worker()
    db.failing = True
    assert lab.read(worker, 5000, "ttl").detail == "database_unavailable"
    db.failing = False
    failed = len(db.item_queries(5000))
    assert lab.read(worker, 5000, "ttl").status == 404
    assert len(db.item_queries(5000)) == failed, "the slow query ran for an id above the table"


def test_a_flood_of_absent_ids_leaves_a_real_cold_key_its_fill(lab, db):
    """Old engine (issue 17): a flood of absent ids takes every fill slot, and a real cold key then
    gets 503 overloaded."""
    worker = lab.worker(miss_slots=4, fill_slots=2)
    ids = range(5000, 5004)
    gates = [db.gate(item) for item in ids]
    flood = [lab.background(lab.read, worker, item, "ttl") for item in ids]
    wait_until(  # each flood request answered, or holding a fill slot in the database
        lambda: sum(f.done() for f in flood) + sum(len(db.item_queries(i)) for i in ids) >= 4,
        5,
        interval=0.01,
        message="the flood to be admitted or refused",
    )
    cold = lab.read(worker, 1, "delete")
    for gate in gates:
        gate.set()
    for future in flood:
        future.result(timeout=10)
    assert cold.status == 200, f"a real cold key during a flood of absent ids: {cold.line(0)}"


def test_a_cached_key_keeps_answering_while_misses_fill_the_worker_and_redis_is_slow(lab, db):
    """Old engine (issue 17, seen through Nginx: 503s for a cached key during a
    flood of cold misses, confirmed here): a worker without its own copy of a key
    cached in Redis, whose Redis answers later than its timeout (a saturated
    machine), went degraded and needed a slot the flood held: 503 overloaded."""
    cached_by, worker = lab.workers_with(2, miss_slots=4, fill_slots=2, redis_socket_timeout_ms=75)
    assert lab.read(cached_by, 5, "ttl").status == 200  # item 5 is in Redis
    gates = [db.gate(item) for item in (1, 2, 3, 4)]
    worker.faults.slow_replies(0.15)  # later than its 75 ms timeout (the default)
    flood = [lab.background(lab.read, worker, item, "ttl") for item in (1, 2, 3, 4)]
    wait_until(  # every flood request holds a query or was refused
        lambda: sum(f.done() for f in flood) + len(db.queries) - 1 >= 4,
        10,
        interval=0.01,
        message="the flood to be admitted or refused",
    )
    hit = lab.read(worker, 5, "ttl")
    worker.faults.slow_replies(0.0)
    for gate in gates:
        gate.set()
    for future in flood:
        future.result(timeout=10)
    assert hit.status == 200, f"a key cached in Redis during a flood of misses: {hit.line(0)}"


def test_every_user_of_one_cold_key_gets_it(lab, db):
    """Old engine (issue 17): followers of an in-flight fill count against the miss slots, so users
    waiting for one cold key are refused with 503 overloaded."""
    worker = lab.worker(miss_slots=4, fill_slots=2)
    db.latency = 0.5  # the one fill: every request arrives while it runs
    answers = lab.together([lambda: lab.read(worker, 1, "delete")] * 10)
    statuses = [a.status for a in answers]
    assert statuses == [200] * 10, f"10 users of one cold key: {statuses}"
    assert len(db.item_queries(1)) == 1


def test_the_refresh_queue_is_bounded(lab, db, node):
    """Old engine (issue 17, suspected and confirmed): the refresh pool's queue is
    unbounded: every stale key read while the refresh threads are busy queues one
    more refresh."""
    queue = 2
    worker = lab.worker(  # swr: every read goes to Redis, where the entries are aged
        cache_strategy="swr", refresh_threads=1, **{adapter.REFRESH_QUEUE_SETTING: queue}
    )
    keys = range(0, 20)
    for item in keys:
        lab.version(worker, item)
        assert adapter.make_stale(
            node.admin, worker.settings, adapter.version_key(lab.settings, item)
        )
    before = len(db.queries)
    gate = db.gate(None)  # the one refresh thread blocks on its query
    for item in keys:
        assert lab.version(worker, item).cache == "STALE"
    assert db.wait_for_queries(None, before + 1), "no refresh started"
    gate.set()
    bound = 1 + adapter.refresh_queue_bound(worker.settings)  # the one running, the queue
    with pytest.raises(TimeoutError):  # the old engine ran every queued refresh at once
        wait_until(
            lambda: len(db.queries) - before > bound,
            0.5,
            interval=0.01,
            message=f"more than {bound} refreshes",
        )


def test_a_refused_refresh_is_not_counted_as_ok(lab, db, node):
    """Old engine (issue 17, suspected and confirmed): a refresh whose guarded write
    was refused (Redis holds something newer) is counted as outcome ok."""
    reader, writer = lab.workers_with(2, cache_strategy="swr")  # reads go to Redis
    lab.read(reader, 3)
    assert adapter.make_stale(
        node.admin, lab.settings, adapter.entry_key(lab.settings, 3, "write-through")
    )
    gate = db.gate(3)
    before = refreshes(reader)
    assert lab.read(reader, 3).cache == "STALE"  # starts a refresh: it reads v1, then waits
    assert db.wait_for_queries(3, 2), "the refresh never queried"
    put = lab.write(writer, 3)  # v2 written through: the refresh's v1 must be refused
    assert put.detail == "written", put.line(0)
    gate.set()
    wait_until(
        lambda: sum(refreshes(reader).values()) > sum(before.values()),
        5,
        interval=0.01,
        message="the refresh to end",
    )
    after = refreshes(reader)
    ok = after.get("ok", 0) - before.get("ok", 0)
    assert ok == 0, f"a refused refresh counted as ok: {before} -> {after}"


def refreshes(worker) -> dict[str, float]:
    """cachelab_cache_refreshes_total by outcome, from the worker's /metrics."""
    body = worker.client().get("/metrics").get_data(as_text=True)
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "cachelab_cache_refreshes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcome = sample.labels["outcome"]
                    counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return counts


def test_a_stampede_on_a_slow_redis_still_runs_one_query(lab, db):
    """Found by the stack test under load (not in issue 17's list): 100 users
    of one cold key across two containers on a saturated machine, whose Redis
    answered later than the 75 ms timeout: the breaker opened, 93 users went
    without the lease (``redis-unavailable``) and four queries ran, one per
    worker. A leader's calls on the cold path are patient
    (``REDIS_RETRY_TIMEOUT_MS``): the alternative is a second slow query."""
    workers = lab.workers_with(
        3, redis_socket_timeout_ms=75, cache_lock_lease_seconds=3, cache_lock_wait_seconds=5
    )
    db.latency = 0.5
    for worker in workers:
        worker.faults.slow_replies(0.15)  # later than 75 ms, within the patient 500 ms
    try:
        answers = lab.together([lambda w=w: lab.read(w, 2, "delete") for w in workers * 3])
    finally:
        for worker in workers:
            worker.faults.slow_replies(0.0)
    assert [a.status for a in answers] == [200] * 9, [a.line(0) for a in answers]
    queries = db.item_queries(2)
    assert len(queries) == 1, f"{len(queries)} queries of one cold key: {queries} " + "; ".join(
        a.line(0) for a in answers
    )


def test_a_degraded_query_of_a_key_never_refuses_the_next_read_of_it(lab, db, node):
    """Found by the checker (seed 3880068059, an eviction mid-burst): a read
    that lost Redis ran the key's query in the degraded path's own flight; the
    next read of that key found Redis well, led a second flight, and the query
    slot the first one held refused it -- 503 ``overloaded`` for one key, and
    the followers of that flight with it. A worker runs one flight per key,
    whichever path leads it."""
    worker = lab.worker(miss_slots=4, fill_slots=1)
    gate = db.gate(5)
    with node.full():  # the lease cannot be written: this read goes degraded
        degraded = lab.filling(worker, 5, "ttl")
    after = lab.background(lab.read, worker, 5, "ttl")  # Redis well again
    wait_until(
        lambda: after.done() or adapter.waiting_followers(worker.app) > 0,
        5,
        interval=0.01,
        message="the second read to join or be answered",
    )
    gate.set()
    answers = [degraded.result(timeout=10), after.result(timeout=10)]
    assert [a.status for a in answers] == [200, 200], [a.line(0) for a in answers]
    assert answers[0].detail == "redis-unavailable", answers[0].line(0)
