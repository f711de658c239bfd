"""The engine on a real Valkey Cluster (three primaries, three replicas): every
shard's keys, tier 1 kept coherent by one tracking connection per node,
redirections, a failover, a shard that loses every node, and REDIS_CLUSTER
checked against the server. Faults are real (SIGSTOP, SIGKILL, CLUSTER
FAILOVER, a slot moved or left MIGRATING)."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import pytest

from cachelab.config import ConfigError
from cachelab.engine.cluster import ClusterStore, check_mode
from cachelab.engine.keys import item_target, namespace_pattern
from cachelab.engine.model import HIT, LOCAL, MEMORY, REDIS, Loaded, new_entry
from cachelab.engine.store import CacheUnavailable
from loadtest.stack import wait_until
from tests.helpers import free_port


def items_by_primary(settings, cluster, per_primary=1, mode="delete", db=None):
    """{primary name: [item ids whose key it serves]} for every primary (rows
    made in ``db`` for them)."""
    found: dict[str, list[int]] = {}
    item = 1
    while len(found) < 3 or any(len(ids) < per_primary for ids in found.values()):
        key = item_target(settings.cache_namespace, item, mode).key
        ids = found.setdefault(cluster.owner(key).name, [])
        if len(ids) < per_primary:
            ids.append(item)
            if db is not None and item not in db.items:
                db.items[item] = db._row(item, 1, "x" * 8)
        item += 1
    return found


def wait_tracking(lab) -> None:
    wait_until(lambda: lab.tracking.active, 10, interval=0.01, message="tracking on every node")


def warm(lab, target) -> None:
    """Read until tier 1 serves ``target`` (a write is heard twice on a cluster,
    from the primary and, a little later, from its replica: the read just after
    may be refused its copy once)."""
    wait_until(
        lambda: lab.reads.get(target).tier == MEMORY, 2, interval=0.005, message="a memory hit"
    )


def test_entries_leases_and_fences_work_on_every_shard(cluster_settings, valkey_cluster):
    store = ClusterStore(cluster_settings)
    try:
        for primary, (item,) in items_by_primary(cluster_settings, valkey_cluster).items():
            target = item_target(cluster_settings.cache_namespace, item, "delete")
            entry = new_entry(Loaded({"id": item}, 1, 0.0), 0, 10, 5, time.time())
            assert store.write(target.key, entry, entry.px)  # a guarded write (Lua)
            read = store.read(target.key)
            assert read.entry is not None and read.entry.value == {"id": item}, primary
            assert 14_000 < read.pttl_ms <= 15_000
            fence = store.acquire(target.lease_key, target.fence_key, "t", 5000)
            assert fence > 0 and store.acquire(target.lease_key, target.fence_key, "u", 5000) < 0
            assert store.extend(target.lease_key, "t", 5000)
            store.release(target.lease_key, "t")
            assert store.next_fence(target.fence_key) > fence
            assert store.read_patiently(target.key).entry == read.entry
        assert store.breaker_state() == "closed"
    finally:
        store.client.close()


def test_patient_calls_pass_the_node_breaker_and_follow_a_moved_slot(
    cluster_settings, valkey_cluster
):
    """A cold key's lease, renewals, waits and store, and a write's cache action,
    are patient on a cluster too: past the open breaker of the key's node, on
    that node's patient pool, and after the key's slot moved to another primary
    (a MOVED the cluster client has not heard yet)."""
    store = ClusterStore(
        replace(cluster_settings, breaker_failure_threshold=1, breaker_cooldown_seconds=60)
    )
    try:
        by_primary = items_by_primary(cluster_settings, valkey_cluster)
        source, (item,) = next(iter(by_primary.items()))
        other = next(name for name in by_primary if name != source)
        target = item_target(cluster_settings.cache_namespace, item, "delete")
        entry = new_entry(Loaded({"id": item}, 1, 0.0), 0, 10, 5, time.time())
        with pytest.raises(ConnectionError), store.breakers.get(source).guard((ConnectionError,)):
            raise ConnectionError("the node timed out")  # threshold 1: the breaker opens
        with pytest.raises(CacheUnavailable):
            store.read(target.key)  # the short path is refused
        fence = store.acquire(target.lease_key, target.fence_key, "t", 5000, patient=True)
        assert fence > 0
        assert store.extend(target.lease_key, "t", 5000, patient=True)
        assert store.write(target.key, entry, entry.px, patient=True)
        assert store.read_patiently(target.key).entry == entry
        assert store.next_fence(target.fence_key, patient=True) > fence

        valkey_cluster.move_slot(store.client.keyslot(target.key), valkey_cluster.by_name(other))
        assert valkey_cluster.owner(target.key).name == other
        assert store.client.get_node_from_key(target.key).name == source  # not heard yet
        assert store.read_patiently(target.key).entry == entry  # MOVED, followed
        assert other in store._patient  # patiently, on the new owner's own pool
        assert store.delete(target.key, patient=True) == 1
        assert store.write(target.key, entry, entry.px, patient=True)
        with valkey_cluster.by_name(other).client() as owner:
            assert owner.get(target.key) == entry.encode()

        # ASK: the slot is migrating back and the key is not on its owner yet.
        slot = store.client.keyslot(target.key)
        with valkey_cluster.by_name(other).client() as owner:
            owner.delete(target.key)
        valkey_cluster.move_slot(slot, valkey_cluster.by_name(source), migrate=False)
        assert store.write(target.key, entry, entry.px, patient=True)  # ASK, then ASKING
        with valkey_cluster.by_name(source).client() as importing:
            assert importing.execute_command("ASKING") and importing.exists(target.key)
        valkey_cluster.finish_move(
            slot, valkey_cluster.by_name(other), valkey_cluster.by_name(source)
        )
    finally:
        store.client.close()


def test_a_cluster_unreachable_at_start_up_degrades_requests_until_found(cluster_settings):
    """The app starts when no node answers (requests degrade); a call looks for
    the cluster again at most once per breaker cool-down."""
    down = replace(
        cluster_settings, redis_url=f"redis://127.0.0.1:{free_port()}", breaker_cooldown_seconds=60
    )
    store = ClusterStore(down)  # no exception: the app starts degraded
    with pytest.raises(CacheUnavailable, match="waiting to retry"):
        store.read("lab:v3:{item:delete:1}")  # within the cool-down: not asked again
    store._next_connect = 0.0  # the cool-down is over
    with pytest.raises(CacheUnavailable, match="not reachable: "):
        store.read("lab:v3:{item:delete:1}")
    found = ClusterStore(replace(cluster_settings, breaker_cooldown_seconds=60))
    try:
        assert found.read("lab:v3:{item:delete:1}").entry is None  # reachable: nothing there
    finally:
        found.client.close()


def test_tier1_hears_a_write_on_every_shard(cluster_settings, valkey_cluster, db, services):
    """A worker's copies of keys on each shard are dropped by another worker's
    write there within milliseconds (one tracking connection per node)."""
    reader = services(cluster_settings, db)
    writer = services(cluster_settings, db)
    wait_tracking(reader)
    assert set(reader.tracking.status()["nodes"]) == {m.name for m in valkey_cluster.members}
    for primary, (item,) in items_by_primary(cluster_settings, valkey_cluster, db=db).items():
        target = item_target(cluster_settings.cache_namespace, item, "delete")
        warm(reader, target)
        writer.writer.put(item, "changed", "delete", True)
        lag = time.monotonic()
        wait_until(
            partial(forgotten, reader, target),
            2,
            interval=0.001,
            message=f"the invalidation from {primary}",
        )
        assert time.monotonic() - lag < 0.5, primary
        assert reader.reads.get(target).value["version"] == db.items[item]["version"]


def test_a_promoted_replica_s_first_write_is_heard_before_the_next_read(
    cluster_settings, valkey_cluster, db, services
):
    """A manual failover, then at once a write that the new primary acknowledges:
    a worker that does not know of the failover yet (its shard map is re-read
    only every 5 minutes here) must not serve its old copy. It listens to the
    replica too, so the write's invalidation is already on its socket."""
    settings = replace(cluster_settings, cluster_refresh_seconds=300)
    reader = services(settings, db)
    writer = services(cluster_settings, db)
    wait_tracking(reader)
    (item,) = next(iter(items_by_primary(settings, valkey_cluster, db=db).values()))
    target = item_target(settings.cache_namespace, item, "delete")
    warm(reader, target)
    changes = reader.store.shard_map.changes
    primary = valkey_cluster.owner(target.key)
    valkey_cluster.failover(valkey_cluster.replica_of(primary))
    wait_until(lambda: valkey_cluster.owner(target.key) is not primary, 10, message="the new map")
    writer.writer.put(item, "after failover", "delete", True)  # follows MOVED
    assert reader.store.shard_map.changes == changes  # the reader was not told
    assert reader.reads.from_memory(target) is None
    assert reader.reads.get(target).value["version"] == db.items[item]["version"]
    valkey_cluster.wait_healthy()


def test_moved_and_ask_are_followed(cluster_settings, valkey_cluster, db, services):
    lab = services(cluster_settings, db)
    wait_tracking(lab)
    by_primary = items_by_primary(cluster_settings, valkey_cluster, per_primary=2, db=db)
    source_name, (moved, asked) = next(iter(by_primary.items()))
    target_name = next(name for name in by_primary if name != source_name)
    source, target = valkey_cluster.by_name(source_name), valkey_cluster.by_name(target_name)
    moved_t = item_target(cluster_settings.cache_namespace, moved, "delete")
    asked_t = item_target(cluster_settings.cache_namespace, asked, "delete")
    for t in (moved_t, asked_t):
        warm(lab, t)
    changes = lab.store.shard_map.changes

    # ASK: the slot is MIGRATING and the key already moved to the target.
    slot = lab.store.client.keyslot(asked_t.key)
    valkey_cluster.move_slot(slot, target, migrate=False)
    with source.client() as src:
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", asked_t.key)
    lab.reads.tier1.forget(asked_t.key)
    answer = lab.reads.get(asked_t)  # source says ASK: read on the target
    assert answer.tier == REDIS and answer.value["id"] == asked
    valkey_cluster.finish_move(slot, source, target)

    # MOVED: a whole slot moved; the worker's client follows, and the map changes.
    valkey_cluster.move_slot(lab.store.client.keyslot(moved_t.key), target)
    wait_until(
        lambda: lab.store.shard_map.refresh() or lab.store.shard_map.changes > changes,
        5,
        message="the shard map to change",
    )
    assert lab.reads.from_memory(moved_t) is None
    answer = lab.reads.get(moved_t)
    assert answer.tier == REDIS and answer.value["id"] == moved
    assert lab.store.breaker_state() == "closed"


def test_a_paused_primary_opens_only_its_own_breaker(
    cluster_settings, valkey_cluster, db, services
):
    lab = services(cluster_settings, db, breaker_failure_threshold=2, breaker_cooldown_seconds=30)
    wait_tracking(lab)
    by_primary = items_by_primary(cluster_settings, valkey_cluster, db=db)
    targets = {
        name: item_target(cluster_settings.cache_namespace, ids[0], "delete")
        for name, ids in by_primary.items()
    }
    for target in targets.values():
        warm(lab, target)
    paused_name = next(iter(targets))
    paused = valkey_cluster.by_name(paused_name)
    # No failover while it is paused (on a loaded machine the 1 s node timeout
    # may promote its replica before the reads below): this is about the breaker.
    replica = valkey_cluster.replica_of(paused)
    with replica.client() as client:
        client.config_set("cluster-replica-no-failover", "yes")
    valkey_cluster.pause(paused)
    try:
        wait_until(lambda: not lab.tracking.active, 5, interval=0.01, message="tier 1 uncovered")
        for _ in range(3):
            answer = lab.reads.get(targets[paused_name])
            assert answer.tier == LOCAL and answer.detail == "redis-unavailable"
        for name, target in targets.items():
            if name != paused_name:
                answer = lab.reads.get(target)  # tier 1 is off: from Redis, still a hit
                assert (answer.tier, answer.result) == (REDIS, HIT), name
        states = lab.store.breakers.states()
        assert states.get(paused_name) == "open"
        assert all(state == "closed" for name, state in states.items() if name != paused_name)
        # A primary that lost its scripts (a restart, a promoted replica) gets the
        # one it needs by EVAL, on itself: loading it on every primary would fail here.
        other = next(name for name in targets if name != paused_name)
        with valkey_cluster.by_name(other).client() as client:
            client.script_flush()
        assert lab.writer.put(targets[other].ident, "while paused", "delete", True).action == (
            "tombstone"
        )
        with pytest.raises(Exception, match=paused_name):
            lab.store.ping()
    finally:
        valkey_cluster.resume(paused)
        with replica.client() as client:
            client.config_set("cluster-replica-no-failover", "no")
    valkey_cluster.wait_healthy()
    wait_tracking(lab)


def test_purge_info_and_the_key_table_cover_every_primary(
    cluster_settings, valkey_cluster, db, services
):
    lab = services(cluster_settings, db)
    by_primary = items_by_primary(cluster_settings, valkey_cluster, per_primary=3, db=db)
    targets = [
        item_target(cluster_settings.cache_namespace, item, "delete")
        for ids in by_primary.values()
        for item in ids
    ]
    for target in targets:
        lab.reads.get(target)
    pattern = namespace_pattern(cluster_settings.cache_namespace)
    keys = {k.decode() for k in lab.store.scan(pattern)}
    assert {t.key for t in targets} <= keys
    peeked = lab.store.peek([t.key for t in targets])
    assert all(raw is not None and pttl > 0 for raw, pttl, _ in peeked)
    info = lab.store.info()
    assert {row["node"] for row in info["nodes"]} == set(by_primary)
    assert sum(row["slots"] for row in info["nodes"]) == 16384
    wait_until(lambda: lab.store.shard_map.current, 5, message="the shard map")
    nodes = lab.store.topology_status()["cluster"]["nodes"]  # what /readyz shows
    assert len(nodes) == 6 and sum(n["slots"] for n in nodes) == 16384
    assert {n["breaker"] for n in nodes} == {"closed"}
    assert lab.store.purge(pattern) >= len(targets)
    assert not list(lab.store.scan(pattern))


def test_redis_cluster_must_match_the_server(cluster_settings, settings):
    assert check_mode(cluster_settings) == "cluster"
    assert check_mode(settings) == "standalone"
    with pytest.raises(ConfigError, match="REDIS_CLUSTER is off"):
        check_mode(replace(cluster_settings, redis_cluster=False))
    with pytest.raises(ConfigError, match="REDIS_CLUSTER is on"):
        check_mode(replace(settings, redis_cluster=True))
    assert check_mode(replace(settings, redis_url="redis://127.0.0.1:1"), timeout=0.2) is None


def test_a_shard_that_loses_every_node_degrades_only_its_keys(
    cluster_settings, valkey_cluster, db, services
):
    """Both nodes of one shard killed: its keys are served from the worker's
    copy or the database, never an error; the other shards' keys stay cached
    in Redis. The shard comes back with its identity (nodes.conf) and empty."""
    lab = services(cluster_settings, db, breaker_cooldown_seconds=0.5)
    wait_tracking(lab)
    by_primary = items_by_primary(cluster_settings, valkey_cluster, per_primary=2, db=db)
    lost_name, (kept, cold) = next(iter(by_primary.items()))
    lost_primary = valkey_cluster.by_name(lost_name)
    lost = [lost_primary, valkey_cluster.replica_of(lost_primary)]
    ns = cluster_settings.cache_namespace
    warm(lab, item_target(ns, kept, "delete"))
    others = [
        item_target(ns, ids[0], "delete") for name, ids in by_primary.items() if name != lost_name
    ]
    for target in others:
        warm(lab, target)
    queries = db.calls["item"]
    for member in lost:
        valkey_cluster.kill(member)
    try:
        for _ in range(4):  # enough failures to open that shard's breaker
            answer = lab.reads.get(item_target(ns, kept, "delete"))
            assert (answer.tier, answer.detail) == (LOCAL, "redis-unavailable")
        answer = lab.reads.get(item_target(ns, cold, "delete"))
        assert answer.detail == "redis-unavailable" and answer.value["id"] == cold
        for target in others:
            answer = lab.reads.get(target)
            assert (answer.tier, answer.result) == (REDIS, HIT), target.key
        assert db.calls["item"] == queries + 1  # only the cold key of the lost shard
        assert lab.store.breakers.states().get(lost_name) == "open"
    finally:
        for member in lost:
            valkey_cluster.restart(member)
    valkey_cluster.wait_healthy()


def test_moved_slots_drop_only_their_keys_copies(cluster_settings, valkey_cluster, db, services):
    """Slots that moved between known nodes: the copies of their keys are handled
    as invalidated (and a read in flight is refused), the others stay servable --
    a long reshard does not empty tier 1 at every step. A failover is a new epoch."""
    lab = services(cluster_settings, db)
    wait_tracking(lab)
    by_primary = items_by_primary(cluster_settings, valkey_cluster, per_primary=1, db=db)
    moved, kept = (
        item_target(cluster_settings.cache_namespace, ids[0], "delete")
        for ids in list(by_primary.values())[:2]
    )
    for target in (moved, kept):
        warm(lab, target)
    in_flight = lab.tier1.snapshot(moved.key)
    lab.tier1.slots_moved(frozenset({lab.store.client.keyslot(moved.key)}))
    assert lab.reads.from_memory(moved) is None
    assert lab.tier1.changed_since(moved.key, in_flight)
    assert lab.reads.from_memory(kept) is not None
    lab.tier1.topology_changed()
    assert lab.reads.from_memory(kept) is None


def forgotten(worker, target) -> bool:
    """``worker`` holds no copy of ``target`` in memory (it heard the invalidation)."""
    return worker.reads.from_memory(target) is None
