"""PostgreSQL as the engine sees it, controllable, and counted on its own side.

The promises about the database ("one query per key per refresh window") are
judged from here, not from counters the app keeps about itself: every query
is logged with the worker that ran it, the item, when it started and ended,
the row version it read and how it ended. A row is read when its query starts
and the query then takes its latency (like ``slow_item()``, which reads the
row and then sleeps): the window in which writes race with fills.

Each worker gets a :meth:`FakeDatabase.view`, so its queries (request threads
and background refreshes alike) are attributed to it, and killing a worker
ends its queries at once, as a killed process' connections do.

Controls: a latency (global, per item, seeded jitter), gates (per item or for
every query), failures (global or per item), and rows inserted or deleted
directly "in SQL" (no trigger: the app hears nothing of them).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .adapter import DatabaseUnavailable

GATE_SECONDS = 30.0  # a gate never outlives a test that forgot to open it


@dataclass
class Query:
    """One slow query, as the database saw it."""

    worker: str
    kind: str  # "item" | "version"
    item: int | None
    start: float
    end: float | None = None
    version: int | None = None  # the row version it read (None: no such row)
    outcome: str = "running"  # ok | failed | aborted (its worker was killed)

    def overlaps(self, at: float) -> bool:
        return self.start <= at < (self.end if self.end is not None else float("inf"))


@dataclass(frozen=True)
class Commit:
    """A committed change of one row: an update (the app's PUT) or direct SQL."""

    kind: str  # "update" | "insert" | "delete"
    item: int
    version: int | None
    at: float


ROWS = (1, 2, 3, 4, 5, 6, 9)  # 7 and 8 were deleted: absent ids inside the table's range


class FakeDatabase:
    """The ``rows`` exist at version 1; the highest of them bounds the table's
    range (ids above it are outside; missing ids below it are absent rows)."""

    def __init__(
        self,
        rows: Iterable[int] = ROWS,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        self.clock = clock
        # item -> (version, payload)
        self._rows: dict[int, tuple[int, str]] = {item: (1, payload_of(item, 1)) for item in rows}
        self._last_version: dict[int, int] = dict.fromkeys(self._rows, 1)
        self.queries: list[Query] = []
        self.commits: list[Commit] = []
        self.latency = 0.0
        self.jitter = 0.0
        self.item_latency: dict[int, float] = {}
        self.failing = False
        self.failing_items: set[int] = set()
        self._gates: dict[int | None, threading.Event] = {}
        self._dead: dict[str, threading.Event] = {}
        self._kill_at_next_query: dict[str, Callable[[], None]] = {}
        self._versions = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    # -- the engine's side -------------------------------------------------------
    def view(self, worker: str) -> DatabaseView:
        with self._lock:
            self._dead.setdefault(worker, threading.Event())
        return DatabaseView(self, worker)

    def _query(self, worker: str, kind: str, item: int | None) -> dict | int | None:
        """Run one slow query: the row as of its start (or the version query's
        generation number)."""
        if self._dead[worker].is_set():  # a killed process sends nothing
            raise DatabaseUnavailable("the worker's connection was killed")
        with self._lock:
            found = self._rows.get(item) if item is not None else None
            result: dict | int | None = None if found is None or item is None else row(item, *found)
            version = None if found is None else found[0]
            if kind == "version":
                self._versions += 1
                result = version = self._versions
            query = Query(worker, kind, item, self.clock(), version=version)
            self.queries.append(query)
            self._changed.notify_all()
            kill = self._kill_at_next_query.pop(worker, None) if kind == "item" else None
            latency = self.item_latency.get(item, self.latency) if item is not None else None
            if latency is None:
                latency = self.latency
            if self.jitter:
                latency += self._rng.uniform(0.0, self.jitter)
            gate = self._gates.get(item) or self._gates.get(None)
            fail = self.failing or item in self.failing_items
        dead = self._dead[worker]
        if kill is not None:
            kill()  # the worker dies holding its lease, mid-query
        try:
            if gate is not None:
                deadline = time.monotonic() + GATE_SECONDS
                while not gate.wait(0.005):
                    if dead.is_set() or time.monotonic() > deadline:
                        break
            if dead.is_set() or (latency > 0 and dead.wait(latency)):
                self._end(query, "aborted")
                raise DatabaseUnavailable("the worker's connection was killed")
            with self._lock:
                fail = fail or self.failing or item in self.failing_items
            if fail:
                self._end(query, "failed")
                raise DatabaseUnavailable("fake database failing")
        except BaseException:
            if query.outcome == "running":
                self._end(query, "failed")
            raise
        self._end(query, "ok")
        return result

    def _end(self, query: Query, outcome: str) -> None:
        with self._lock:
            query.end, query.outcome = self.clock(), outcome
            self._changed.notify_all()

    def _update(self, worker: str, item: int, payload: str) -> dict | None:
        if self._dead[worker].is_set():
            raise DatabaseUnavailable("the worker's connection was killed")
        if self.failing:
            raise DatabaseUnavailable("fake database failing")
        with self._lock:
            if item not in self._rows:
                return None
            version = self._rows[item][0] + 1
            self._rows[item] = (version, payload)
            self._last_version[item] = version
            self.commits.append(Commit("update", item, version, self.clock()))
            self._changed.notify_all()
        return row(item, version, payload)

    # -- direct SQL ----------------------------------------------------------------
    def insert(self, item: int) -> int:
        with self._lock:
            version = self._last_version.get(item, 0) + 1
            self._rows[item] = (version, payload_of(item, version))
            self._last_version[item] = version
            self.commits.append(Commit("insert", item, version, self.clock()))
        return version

    def delete(self, item: int) -> None:
        with self._lock:
            if self._rows.pop(item, None) is not None:
                self.commits.append(Commit("delete", item, None, self.clock()))

    def max_item_id(self) -> int:
        with self._lock:
            return max(self._rows, default=0)

    def version_of(self, item: int) -> int | None:
        with self._lock:
            found = self._rows.get(item)
        return None if found is None else found[0]

    # -- controls --------------------------------------------------------------------
    def gate(self, item: int | None = None) -> threading.Event:
        """Hold every query of ``item`` (None: every query) until the event is set."""
        event = threading.Event()
        with self._lock:
            self._gates[item] = event
        return event

    def open_gates(self) -> None:
        with self._lock:
            gates, self._gates = self._gates, {}
        for event in gates.values():
            event.set()

    def kill(self, worker: str) -> None:
        self._dead[worker].set()

    def kill_at_next_query(self, worker: str, kill: Callable[[], None]) -> None:
        with self._lock:
            self._kill_at_next_query[worker] = kill

    def heal(self) -> None:
        with self._lock:
            self.latency = self.jitter = 0.0
            self.item_latency.clear()
            self.failing = False
            self.failing_items.clear()
            self._kill_at_next_query.clear()
        self.open_gates()

    # -- what happened ---------------------------------------------------------------
    def item_queries(self, item: int) -> list[Query]:
        with self._lock:
            return [q for q in self.queries if q.kind == "item" and q.item == item]

    def wait_for_queries(self, item: int | None, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` queries of ``item`` (None: of every kind) have started."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                started = sum(1 for q in self.queries if item is None or q.item == item)
                if started >= count:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)


class DatabaseView:
    """What one worker's ``create_app(db=...)`` gets: the engine's database interface."""

    def __init__(self, db: FakeDatabase, worker: str) -> None:
        self._db = db
        self.worker = worker

    def fetch_item(self, item_id: int) -> dict | None:
        found = self._db._query(self.worker, "item", item_id)
        assert found is None or isinstance(found, dict)
        return found

    def fetch_slow_version(self) -> str:
        return f"PostgreSQL 99.0 (fake) #{self._db._query(self.worker, 'version', None)}"

    def update_item(self, item_id: int, payload: str) -> dict | None:
        return self._db._update(self.worker, item_id, payload)

    def item_version(self, item_id: int) -> int | None:
        """The row's version now (a primary-key lookup: not a slow query)."""
        self.ping()
        return self._db.version_of(item_id)

    def max_item_id(self) -> int:
        """The highest id in the table (an index lookup: not a slow query)."""
        self.ping()
        return self._db.max_item_id()

    def ping(self, timeout: float = 1.0) -> None:
        if self._db.failing or self._db._dead[self.worker].is_set():
            raise DatabaseUnavailable("fake database down")


def payload_of(item: int, version: int) -> str:
    """The payload a row has at a version: unique, so a test can spot its bytes."""
    return f"item-{item}-v{version}"


def row(item: int, version: int, payload: str) -> dict:
    return {
        "id": item,
        "version": version,
        "payload": payload,
        "updated_at": f"2026-01-01T00:00:00.{version:06d}+00:00",
    }
