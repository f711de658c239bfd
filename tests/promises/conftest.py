"""Fixtures of the promise checker and the named defect tests (tests/promises/).

Self-contained: its own Valkey processes (a node the workers use and a spare
that replicates it, for READONLY failovers), never the unit layer's shared
server, because its faults (REPLICAOF, CLIENT PAUSE, maxmemory) hit a whole
server. Everything engine-specific goes through :mod:`.adapter`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from . import adapter
from .fakedb import FakeDatabase
from .history import History, Op
from .schedule import Config
from .valkey import Node
from .workers import Worker

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    server = Node()
    yield server
    server.close()


class Lab:
    """Workers on the session's node, one fake database, one history: what a
    named test drives. ``lab.worker(**settings)`` starts one more worker."""

    def __init__(self, node: Node, db: FakeDatabase) -> None:
        self.node = node
        self.db = db
        self.history = History()
        self.settings = Config().settings(node.url, f"lab{next(_namespaces)}")
        self.workers: list[Worker] = []
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lab")

    def worker(self, **overrides: Any) -> Worker:
        settings = replace(self.settings, **overrides) if overrides else self.settings
        worker = Worker(f"w{len(self.workers)}", settings, self.db, seed=len(self.workers))
        self.workers.append(worker)
        worker.wait_settled()
        return worker

    def workers_with(self, count: int, **overrides: Any) -> list[Worker]:
        if overrides:
            self.settings = replace(self.settings, **overrides)
        return [self.worker() for _ in range(count)]

    def read(self, worker: Worker, item: int, mode: str = "write-through") -> Op:
        return worker.read(self.history, item, mode)

    def write(
        self, worker: Worker, item: int, mode: str = "write-through", payload: str = ""
    ) -> Op:
        return worker.write(self.history, item, mode, payload or f"put-{len(self.history.ops)}")

    def version(self, worker: Worker, item: int) -> Op:
        return worker.read_version(self.history, item)

    def hot(self, worker: Worker, item: int, mode: str = "write-through") -> Op:
        """Read ``item`` until ``worker`` serves it from tier 1 (three reads on a
        quiet machine; on a loaded one tier 1 may be uncovered for a moment,
        a heartbeat late: read again, within a deadline)."""
        reads = [self.read(worker, item, mode) for _ in range(3)]
        deadline = time.monotonic() + 5
        while reads[-1].source != "memory" and time.monotonic() < deadline:
            reads.append(self.read(worker, item, mode))
        last = reads[-1]
        assert last.source == "memory", f"setup: item {item} not in tier 1: {last.line(0)}"
        return last

    def filling(self, worker: Worker, item: int, mode: str = "write-through") -> Future:
        """A read of a cold ``item`` in the background, once its query has started."""
        started = len(self.db.item_queries(item))
        future = self.background(self.read, worker, item, mode)
        assert self.db.wait_for_queries(item, started + 1), f"the fill of item {item} never started"
        return future

    def background(self, call: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(call, *args)

    def together(self, calls: list[Callable[[], Op]]) -> list[Op]:
        """Start every call at once (a barrier) and return their operations."""
        barrier = threading.Barrier(len(calls))

        def run(call: Callable[[], Op]) -> Op:
            barrier.wait(10)
            return call()

        futures = [self._pool.submit(run, call) for call in calls]
        return [future.result(timeout=30) for future in futures]

    def close(self) -> None:
        self.db.heal()
        for worker in self.workers:
            worker.faults.heal()
        self._pool.shutdown(wait=True, cancel_futures=True)
        adapter.stop_workers([w.redis for w in self.workers])
        self.node.reset()


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def lab(node: Node, db: FakeDatabase) -> Iterator[Lab]:
    made = Lab(node, db)
    with adapter.quiet_logs():
        yield made
        made.close()
