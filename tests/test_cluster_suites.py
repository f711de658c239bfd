"""The caching suites whose outcome depends on where the keys live, run once more
on the Valkey Cluster (a third engine beside Valkey and Redis 7).

Chosen, and why (docs/testing.md keeps the same list):

* read-your-writes while the item is hot in every worker -- tier 1 stays
  coherent only if each worker hears the invalidations of the node that owns
  the item: one tracking connection per node, drained by the same rule;
* one hundred users of one cold key, and the stampede across two app
  containers -- one query per key rests on the lease and fence scripts, which
  must run on the key's own shard (hash tags, routing by key);
* a write through another container never served stale from memory -- the
  invalidation crosses containers through the shard that owns the key.

Not repeated here: what is the same code whatever the topology (the bulkhead
and floods of misses, negative caching, bad input, the write API's rules), and
the single node's fault table (stop, pause, restart, REPLICAOF), whose cluster
counterparts are the drills (tests/test_cluster_drills.py) and the lost shard
(tests/test_cluster_stack.py).
"""

from __future__ import annotations

import pytest

from tests import test_caching_engine as engine_suite
from tests import test_promises_stack as promises

pytestmark = pytest.mark.cluster_suites  # alone: scripts/test -m cluster_suites


@pytest.fixture
def lab(cluster_lab):
    return cluster_lab


def test_a_writer_reads_its_write_while_the_item_is_hot_in_every_worker(lab):
    promises.test_a_writer_reads_its_write_while_the_item_is_hot_in_every_worker(lab)


def test_one_hundred_users_of_one_cold_key_all_get_it_from_one_query(lab):
    promises.test_one_hundred_users_of_one_cold_key_all_get_it_from_one_query(lab)


@pytest.mark.lab_settings(app_replicas=2)  # as in tests/test_caching_engine.py
def test_cold_key_stampede_runs_the_slow_query_once_across_replicas(lab):
    engine_suite.test_cold_key_stampede_runs_the_slow_query_once_across_replicas(lab)


@pytest.mark.lab_settings(app_replicas=2)  # as in tests/test_caching_engine.py
def test_a_write_through_another_container_is_never_served_stale_by_memory(lab):
    engine_suite.test_a_write_through_another_container_is_never_served_stale_by_memory(lab)
