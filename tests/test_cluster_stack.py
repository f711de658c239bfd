"""The lab on a Valkey Cluster (compose.cluster.yaml: three primaries, three
replicas, REDIS_CLUSTER=on) through Nginx: MISS then HIT on every shard, tier 1
coherent per shard (invalidation lag measured per shard), purge, the key table,
INFO and readiness over every primary, a shard that loses both its nodes, and
REDIS_CLUSTER checked against the server at start-up."""

from __future__ import annotations

import json
import time
from functools import partial

import pytest
import requests

from loadtest.stack import ROOT, Stack, parse_json, wait_until
from loadtest.traffic import percentile

RESULTS = ROOT / "results" / "cluster-invalidation-lag.json"
SERVER_ERRORS = {500, 502, 504}


@pytest.fixture
def lab(cluster_lab):
    return cluster_lab


def version_paths_by_shard(lab: Stack, start: int = 1) -> dict[str, str]:
    """One /api/version?item=N path per primary (the key comes back in the JSON)."""
    found: dict[str, str] = {}
    primaries = {n.service for n in lab.primaries()}
    item = start
    while set(found) != primaries:
        path = f"/api/version?item={item}"
        owner = lab.owner_of(parse_json(lab.get(path))["key"]).service
        found.setdefault(owner, path)
        item += 1
    return found


def item_paths_by_shard(lab: Stack, per_shard: int, start: int = 1) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {n.service: [] for n in lab.primaries()}
    item = start
    while any(len(ids) < per_shard for ids in found.values()):
        owner = lab.owner_of(f"lab:v3:{{item:delete:{item}}}").service
        if len(found[owner]) < per_shard:
            found[owner].append(item)
        item += 1
    return found


def memory_hit(answer: requests.Response) -> bool:
    return answer.headers.get("Cache-Status", "").endswith("lab-memory; hit")


def hit_in_memory(lab: Stack, path: str) -> bool:
    return memory_hit(lab.get(path))


def all_hits_in_memory(session: requests.Session, url: str, times: int) -> bool:
    return all(memory_hit(session.get(url)) for _ in range(times))


def test_the_cluster_serves_miss_then_hit_on_every_shard(lab):
    ready = lab.get("/readyz").json()
    assert ready["status"] == "ready", ready
    nodes = ready["redis"]["cluster"]["nodes"]
    assert len(nodes) == 6 and sum(n["slots"] for n in nodes) == 16384
    assert {n["role"] for n in nodes} == {"primary", "replica"}
    assert ready["redis"]["memory_tier"]["mode"] == "tracking"
    assert len(ready["redis"]["memory_tier"]["nodes"]) == 6
    for shard, (item,) in item_paths_by_shard(lab, 1).items():
        path = f"/api/items/{item}?mode=delete"
        first, second = lab.get(path), lab.get(path)
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT"), shard
        assert first.json()["item"] == second.json()["item"]
        wait_until(partial(hit_in_memory, lab, path), 10, message=f"a memory hit on {shard}")
        assert lab.slow_calls_by_item().get(item) == 1, shard


def test_tier1_is_coherent_on_every_shard_invalidation_lag_per_shard(lab):
    """A SET made on the shard's primary outside the app, against copies warm in
    both workers' memory: the time until no worker serves the old value, 15
    writes per shard."""
    session = requests.Session()
    figures = {}
    for shard, path in version_paths_by_shard(lab, start=100).items():
        key = parse_json(lab.get(path))["key"]
        client = lab.node_client(lab.owner_of(key).service)
        lags = []
        for round_ in range(15):
            wait_until(
                partial(all_hits_in_memory, session, lab.url(path), 6),
                10,
                interval=0.05,
                message=f"both workers serving {shard}'s key from memory",
            )
            entry = json.loads(client.get(key))
            marker = f"written-outside-{shard}-{round_}"
            entry["value"]["version"] = marker
            entry["fence"] += 1
            client.set(key, json.dumps(entry), px=client.pttl(key))
            written = time.perf_counter()
            last_old = written
            deadline = written + 2.0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if session.get(lab.url(path)).json()["version"] != marker:
                    last_old = started
                elif started - last_old > 0.05:
                    break  # 50 ms of new values only
            lags.append(last_old - written)
        client.close()
        lags.sort()
        figures[shard] = {
            "writes": len(lags),
            "p50_ms": round(percentile(lags, 50) * 1000, 2),
            "p99_ms": round(percentile(lags, 99) * 1000, 2),
            "max_ms": round(lags[-1] * 1000, 2),
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1, sort_keys=True))
    print(f"\ninvalidation lag per shard: {figures}")
    for shard, lag in figures.items():
        assert lag["p50_ms"] <= 5 and lag["p99_ms"] <= 25 and lag["max_ms"] <= 200, (shard, lag)


def test_purge_the_key_table_and_info_cover_every_primary(lab):
    by_shard = item_paths_by_shard(lab, 2)
    for ids in by_shard.values():
        for item in ids:
            lab.get(f"/api/items/{item}?mode=delete")
    snapshot = lab.get("/api/dashboard").json()
    info = snapshot["redis_info"]
    assert info["status"] == "ok" and len(info["nodes"]) == 3, info
    assert sum(row["slots"] for row in info["nodes"]) == 16384
    assert all(row["keys"] >= 2 for row in info["nodes"]), info["nodes"]
    assert snapshot["keys"]["total"] == 6, snapshot["keys"]
    on_nodes = sum(int(lab.redis_cli("DBSIZE", node=n.service)) for n in lab.primaries())
    result = lab.compose("exec", "-T", "app", "cachelab", "cache", "purge")
    assert f"deleted {on_nodes} keys" in result.stdout, result.stdout
    assert sum(int(lab.redis_cli("DBSIZE", node=n.service)) for n in lab.primaries()) == 0
    assert lab.get(f"/api/items/{by_shard[next(iter(by_shard))][0]}").headers["X-Cache"] == "MISS"


def test_a_shard_that_loses_both_nodes_degrades_only_its_keys(lab):
    """Both nodes of one shard paused: its warm keys answer from the workers'
    copies and its cold keys from PostgreSQL (Cache-Status says so), the other
    shards' keys stay cached in Redis; no 5xx. When the nodes come back the
    shard serves its keys again."""
    by_shard = item_paths_by_shard(lab, 3, start=300)
    lost = lab.primaries()[0]
    lost_nodes = [lost, lab.replica_of(lost)]
    warm_ids = {shard: ids[:2] for shard, ids in by_shard.items()}
    for ids in warm_ids.values():
        for item in ids:
            wait_until(
                partial(hit_in_memory, lab, f"/api/items/{item}?mode=delete"),
                10,
                message="warm copies",
            )
    containers = [lab.container(node.service) for node in lost_nodes]
    for container in containers:
        container.pause()
    try:
        answers: dict[str, list[requests.Response]] = {}
        started, passes = time.monotonic(), 0
        # Passes over every item while the shard is gone: at least three and 8 s,
        # at most 60 s (a bounded loop).
        while (passes < 3 or time.monotonic() - started < 8) and time.monotonic() - started < 60:
            for shard, ids in by_shard.items():
                for item in ids:
                    answer = lab.get(f"/api/items/{item}?mode=delete")
                    answers.setdefault(shard, []).append(answer)
            passes += 1
        assert passes >= 3, f"{passes} passes in 60 s"
        statuses = {a.status_code for group in answers.values() for a in group}
        assert not statuses & SERVER_ERRORS and statuses == {200}, statuses
        lost_answers = answers[lost.service][-len(by_shard[lost.service]) :]
        assert all("redis-unavailable" in a.headers["Cache-Status"] for a in lost_answers)
        for shard, group in answers.items():
            if shard != lost.service:
                last = group[-len(by_shard[shard]) :]
                assert all(a.headers["X-Cache"] == "HIT" for a in last), (
                    shard,
                    [a.headers["Cache-Status"] for a in last],
                )
        ready = lab.get("/readyz").json()
        assert ready["status"] == "degraded" and lost.service in ready["redis"]["error"], ready
        breakers = {n["node"]: n["breaker"] for n in ready["redis"]["cluster"]["nodes"]}
        lost_names = {f"{node.service}:6379" for node in lost_nodes}
        assert all(state == "closed" for n, state in breakers.items() if n not in lost_names), (
            breakers
        )
    finally:
        for container in containers:
            container.unpause()
    wait_until(lambda: lab.get("/readyz").json()["status"] == "ready", 60, message="recovery")
    item = by_shard[lost.service][0]
    wait_until(
        lambda: lab.get(f"/api/items/{item}?mode=delete").headers["X-Cache"] == "HIT",
        30,
        message="the shard's keys cached again",
    )


def test_redis_cluster_must_match_the_server_or_start_up_stops(lab, stack):
    """REDIS_CLUSTER=off against a cluster node, and on against a lone server:
    the app does not start, and the message names the variable."""
    for topology, value in ((lab, "off"), (stack, "on")):
        result = topology.compose(
            "run", "--rm", "--no-deps", "-e", f"REDIS_CLUSTER={value}", "app", check=False
        )
        assert result.returncode != 0
        assert f"REDIS_CLUSTER is {value}" in result.stderr + result.stdout, result.stderr[-2000:]
