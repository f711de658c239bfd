"""Run one schedule against real workers and record its history.

A run: fresh workers (their own namespace on the shared node), the steps in
order -- requests on a thread pool, faults on the nemesis' threads, each
healing itself after its duration --, then *settle*: every fault healed, every
request answered (or recorded ``unknown`` after :data:`OP_DEADLINE`), every
live worker reconnected with its breaker closed; then *final reads*: each
live worker and one fresh worker (no tier 1 yet) read every key once, so that
a stale value left in Redis or in a worker's memory shows up even if no
random read met it. :mod:`.checkers` judge the history.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field

from click.testing import CliRunner

from cachelab.cli import main as cachelab_cli

from . import adapter
from .checkers import PROMISES, Context, Violation, check_all
from .fakedb import FakeDatabase
from .history import ERROR, NEMESIS, OK, SQL, UNKNOWN, History, Op
from .schedule import (
    OUT_OF_RANGE,
    Burst,
    Fault,
    Flood,
    Poll,
    Read,
    Schedule,
    Session,
    Sleep,
    Sql,
    Stampede,
    Step,
    Version,
    Write,
    Writeback,
    mode_of,
)
from .valkey import Node
from .workers import Worker

OP_DEADLINE = 20.0  # seconds: an answer later than this is a hang
FINAL_ITEMS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
_namespaces = itertools.count(1)


@dataclass
class Result:
    schedule: Schedule
    history: History
    db: FakeDatabase
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0

    def report(self, limit: int = 6) -> str:
        lines = [f"{len(self.violations)} violation(s) in {self.seconds:.1f} s:"]
        for violation in self.violations[:limit]:
            lines.append(violation.describe(self.history))
        if len(self.violations) > limit:
            lines.append(f"... and {len(self.violations) - limit} more")
        lines.append("faults: " + (self.history.format(self.history.faults()) or "none"))
        return "\n".join(lines)


class Run:
    def __init__(
        self, node: Node, schedule: Schedule, promises: tuple[str, ...] = PROMISES
    ) -> None:
        self.node = node
        self.promises = promises
        self.schedule = schedule
        self.config = schedule.config
        self.namespace = f"chk{next(_namespaces)}"
        self.settings = self.config.settings(node.url, self.namespace)
        self.db = FakeDatabase(seed=schedule.seed)
        self.db.latency = self.config.db_latency
        self.history = History()
        self.workers: list[Worker] = []
        self._requests = ThreadPoolExecutor(max_workers=48, thread_name_prefix="checker-op")
        self._nemesis = ThreadPoolExecutor(max_workers=16, thread_name_prefix="nemesis")
        self._op_futures: list[Future] = []
        self._fault_futures: list[Future] = []
        self._writes = itertools.count(1)

    # -- the whole run ---------------------------------------------------------------------
    def execute(self) -> Result:
        with adapter.quiet_logs(), self._thread_crashes():
            return self._execute()

    @contextmanager
    def _thread_crashes(self) -> Iterator[None]:
        """An exception that kills one of the engine's background threads (lease
        keeper, tracking listener, refresher) is an error like a 500: record it."""
        previous = threading.excepthook

        def record(args: threading.ExceptHookArgs) -> None:
            name = args.thread.name if args.thread is not None else "?"
            op = self.history.invoke(name, "thread-crash")
            text = "".join(traceback.format_exception(args.exc_value, limit=-6))
            self.history.complete(op, ERROR, detail=text)

        threading.excepthook = record
        try:
            yield
        finally:
            threading.excepthook = previous

    def _execute(self) -> Result:
        started = time.monotonic()
        try:
            for index in range(self.config.workers):
                self.workers.append(self._worker(f"w{index}", self.schedule.seed + index))
            for worker in self.workers:
                worker.wait_settled()
            self.history = History()
            for step in self.schedule.steps:
                self._step(step)
            self._settle()
            self._final_reads()
        finally:
            self._close()
        result = Result(self.schedule, self.history, self.db)
        result.violations = check_all(
            Context(self.settings, self.config, self.history, self.db, self._killed()),
            self.promises,
        )
        result.seconds = time.monotonic() - started
        return result

    def _worker(self, name: str, seed: int) -> Worker:
        return Worker(name, self.settings, self.db, seed)

    def _killed(self) -> dict[str, float]:
        return {w.name: w.killed_at for w in self.workers if w.killed_at is not None}

    # -- steps -------------------------------------------------------------------------------
    def _live(self, index: int) -> Worker | None:
        worker = self.workers[index % len(self.workers)]
        return worker if worker.alive else None

    def _submit(self, call: Callable[..., object], *args: object) -> None:
        self._op_futures.append(self._requests.submit(call, *args))

    def _step(self, step: Step) -> None:
        if isinstance(step, Sleep):
            time.sleep(step.ms / 1000)  # the schedule's time passing, not a synchronisation
        elif isinstance(step, Sql):
            op = self.history.invoke(SQL, step.action, item=step.item)
            (self.db.insert if step.action == "insert" else self.db.delete)(step.item)
            self.history.complete(op, "ok")
        elif isinstance(step, Fault):
            self._fault_futures.append(self._nemesis.submit(self._fault, step))
        elif isinstance(step, Stampede):
            for offset in range(step.n):
                reader = self._live(offset)
                if reader is not None:
                    self._submit(reader.read, self.history, step.item, mode_of(step.item))
        else:
            worker = self._live(step.w)
            if worker is None:
                return  # a killed worker sends nothing any more
            if isinstance(step, Read):
                self._submit(worker.read, self.history, step.item, mode_of(step.item))
            elif isinstance(step, Write):
                payload = f"p{next(self._writes)}"
                self._submit(worker.write, self.history, step.item, mode_of(step.item), payload)
            elif isinstance(step, Version):
                self._submit(worker.read_version, self.history, step.item)
            elif isinstance(step, Poll):
                self._submit(self._poll, worker, step.item, step.n)
            elif isinstance(step, Session):
                self._submit(self._session, worker, self._live(step.r) or worker, step.item)
            elif isinstance(step, Writeback):
                self._submit(self._writeback, worker, step.item, step.stall)
            elif isinstance(step, Burst):
                for _ in range(step.n):
                    self._submit(worker.read, self.history, step.item, mode_of(step.item))
            elif isinstance(step, Flood):
                for offset in range(step.n):
                    self._submit(worker.read, self.history, OUT_OF_RANGE + offset, "ttl")

    def _poll(self, worker: Worker, item: int, times: int) -> None:
        for _ in range(times):
            if worker.alive:
                worker.read(self.history, item, mode_of(item))

    def _session(self, writer: Worker, reader: Worker, item: int) -> None:
        write = writer.write(self.history, item, mode_of(item), f"p{next(self._writes)}")
        if write.outcome == OK and reader.alive:
            reader.read(self.history, item, mode_of(item))

    def _writeback(self, writer: Worker, item: int, stall: bool) -> None:
        mode = mode_of(item)
        live = [w for w in self.workers if w.alive]
        for worker in live:
            for _ in range(3):
                worker.read(self.history, item, mode)
        if stall:
            for worker in live:
                if worker is not writer:
                    worker.faults.stall_next_tracking_read(0.15)
        write = writer.write(self.history, item, mode, f"p{next(self._writes)}")
        if write.outcome == OK:
            for worker in live:
                if worker.alive:
                    worker.read(self.history, item, mode)

    # -- faults --------------------------------------------------------------------------------
    def _fault(self, fault: Fault) -> None:
        worker = self.workers[fault.w % len(self.workers)]
        kind, seconds = fault.kind, fault.ms / 1000
        node = self.node
        target = worker.name if kind.startswith(("tracking", "jitter", "kill-worker")) else None
        if kind == "kill-worker":
            if sum(w.alive for w in self.workers) > 1 and worker.alive:
                self.db.kill_at_next_query(worker.name, lambda: self._kill(worker))
            return
        server_side = kind in ("readonly", "pause-write", "pause-all", "kill-connections")
        server_side = server_side or kind in ("squeeze", "evict", "tracking-kill", "purge")
        lock = node.lock if server_side else threading.Lock()
        with lock:
            op = self.history.invoke(NEMESIS, kind, target=target, detail=f"{fault.ms} ms")
            try:
                self._inject(fault, worker, seconds)
            finally:
                self.history.complete(op, "ok")

    def _inject(self, fault: Fault, worker: Worker, seconds: float) -> None:
        kind, node, db = fault.kind, self.node, self.db
        if kind == "readonly":
            with node.readonly():
                time.sleep(seconds)  # the fault's duration
        elif kind in ("pause-write", "pause-all"):
            node.pause(seconds, kind.split("-")[1].upper())
            time.sleep(seconds)  # CLIENT PAUSE ends by itself; nothing is served meanwhile
        elif kind == "kill-connections":
            node.kill_clients()
        elif kind == "squeeze":
            with node.squeezed(16_384 * fault.level):
                time.sleep(seconds)
        elif kind == "evict":
            node.evict_volatile()
        elif kind == "purge":
            purge(self.settings)
        elif kind == "tracking-kill":
            node.kill_clients(worker.faults.tracking_addresses())
        elif kind == "tracking-silent":
            worker.faults.silence_tracking()
        elif kind == "tracking-delay":
            worker.faults.delay_tracking_reads(0.1 * fault.level)
            time.sleep(seconds)
            worker.faults.delay_tracking_reads(0.0)
        elif kind == "jitter":
            worker.faults.jitter(0.5, 0.01 * fault.level)
            time.sleep(seconds)
            worker.faults.jitter(0.0, 0.0)
        elif kind == "db-slow":
            factor = {1: 0.6, 2: 1.25, 3: 2.0}[fault.level]
            db.latency = min(self.config.lock_wait * factor, 1.6)
            time.sleep(seconds)
            db.latency = self.config.db_latency
        elif kind == "db-fail":
            db.failing = True
            time.sleep(seconds)
            db.failing = False
        else:  # pragma: no cover - a kind the schedule does not generate
            raise ValueError(f"unknown fault {kind!r}")

    def _kill(self, worker: Worker) -> None:
        op = self.history.invoke(NEMESIS, "killed", target=worker.name, detail="mid-query")
        worker.kill(op.invoke)
        self.history.complete(op, "ok")

    # -- the end -------------------------------------------------------------------------------
    def _settle(self) -> None:
        wait_futures(self._fault_futures, timeout=OP_DEADLINE)
        self.db.heal()
        self.db.latency = 0.0
        for worker in self.workers:
            worker.faults.heal()
        for future in self._fault_futures:
            if future.done():
                future.result()  # a fault that could not be injected is the harness' bug
        done, _ = wait_futures(self._op_futures, timeout=OP_DEADLINE)
        for op in self.history.pending():
            if op.process not in (NEMESIS, SQL):
                self.history.complete(op, UNKNOWN, detail=f"no answer within {OP_DEADLINE:g} s")
        for future in done:
            future.result()  # an exception here is the harness' own bug: let it show
        for worker in self.workers:
            if worker.alive:
                op = self.history.invoke(worker.name, "recover")
                try:
                    worker.wait_settled()
                except TimeoutError as exc:
                    self.history.complete(op, ERROR, detail=f"{exc}; /readyz: {worker.readyz()}")
                else:
                    self.history.complete(op, OK)

    def _final_reads(self) -> None:
        fresh = self._worker("fresh", self.schedule.seed + 99)
        self.workers.append(fresh)
        fresh.wait_settled()
        for worker in self.workers:
            if worker.alive:
                for item in FINAL_ITEMS:
                    worker.read(self.history, item, mode_of(item))

    def _close(self) -> None:
        self.db.heal()
        for worker in self.workers:
            worker.faults.heal()
        self._requests.shutdown(wait=False, cancel_futures=True)
        self._nemesis.shutdown(wait=False, cancel_futures=True)
        adapter.stop_workers([w.redis for w in self.workers])
        self.node.reset()


def purge(settings: adapter.Settings) -> None:
    """``cachelab cache purge``, as an operator runs it, on this run's namespace."""
    env = {
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "CACHE_NAMESPACE": settings.cache_namespace,
    }
    outcome = CliRunner().invoke(cachelab_cli, ["cache", "purge"], env=env)
    if outcome.exit_code != 0:
        raise RuntimeError(f"cachelab cache purge failed: {outcome.output}")


def replay(node: Node, schedule: Schedule, promises: tuple[str, ...] = PROMISES) -> Result:
    """Run one schedule (e.g. one printed by a failure) and judge it."""
    return Run(node, schedule, promises).execute()


__all__ = ["OP_DEADLINE", "Op", "Result", "Run", "purge", "replay"]
