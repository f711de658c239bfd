"""The recorded history: every operation, from the client's side, on one clock.

As Jepsen records it: which process (worker) did what to which key, with
which value, when it was invoked and when it completed (``time.monotonic``,
the clock of the fake database's log too), and how it ended:

``ok``       the promise applies (200; for a write: committed)
``fail``     failed for sure: a 4xx, or a documented 503 (its code in ``detail``)
``unknown``  no answer within the run's deadline (it may have happened)
``error``    500, 502, 504, any other 5xx, or an exception out of the WSGI app
``crashed``  its worker was killed before it answered (no answer to judge)

Faults are operations of the process ``nemesis``, their window from invoke to
complete; direct SQL changes are operations of the process ``sql``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

OK, FAIL, UNKNOWN, ERROR, CRASHED = "ok", "fail", "unknown", "error", "crashed"
NEMESIS, SQL = "nemesis", "sql"


@dataclass
class Op:
    index: int
    process: str  # a worker's name, "nemesis" or "sql"
    kind: str  # read | write | version | flood | a fault's name | insert | delete
    item: int | None = None
    mode: str | None = None
    invoke: float = 0.0
    complete: float | None = None
    outcome: str = "pending"
    status: int | None = None
    value: int | None = None  # the version read or committed (or the version query's generation)
    source: str | None = None  # memory | redis | database | local
    cache: str | None = None  # HIT | STALE | MISS | BYPASS
    etag: str | None = None
    stored: bool = False  # a MISS whose entry was stored (Cache-Status: stored)
    detail: str = ""  # a 503's code, a PUT's cache action, an error's text, a fault's target
    target: str | None = None  # the worker a fault was aimed at

    @property
    def key(self) -> str:
        if self.kind == "version":
            return f"version:{self.item}"
        return f"item:{self.item}:{self.mode}"

    @property
    def end(self) -> float:
        return float("inf") if self.complete is None else self.complete

    def line(self, origin: float) -> str:
        done = "   ...  " if self.complete is None else f"{(self.complete - origin) * 1000:8.1f}"
        what = self.kind if self.item is None else f"{self.kind} {self.key}"
        value = "" if self.value is None else f" v={self.value}"
        where = "" if self.source is None else f" {self.cache}/{self.source}"
        status = "" if self.status is None else f" {self.status}"
        target = "" if self.target is None else f" -> {self.target}"
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"#{self.index:<4} {(self.invoke - origin) * 1000:8.1f} {done} ms  "
            f"{self.process:<8} {what}{target}: {self.outcome}{status}{value}{where}{detail}"
        )


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    origin: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def invoke(self, process: str, kind: str, **fields: object) -> Op:
        with self._lock:
            op = Op(len(self.ops), process, kind, invoke=self.now(), **fields)  # type: ignore[arg-type]
            self.ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, **fields: object) -> Op:
        for name, value in fields.items():
            setattr(op, name, value)
        op.complete, op.outcome = self.now(), outcome
        return op

    def of(self, *kinds: str) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.kind in kinds]

    def faults(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.process == NEMESIS]

    def pending(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.complete is None]

    def format(self, ops: list[Op] | None = None, limit: int = 80) -> str:
        chosen = self.ops if ops is None else ops
        lines = [op.line(self.origin) for op in sorted(chosen, key=lambda o: o.invoke)[:limit]]
        if len(chosen) > limit:
            lines.append(f"... {len(chosen) - limit} more")
        return "\n".join(lines)
