"""Cluster drills: steady traffic through Nginx, a recorded HTTP history, and the
figures of one event (a failover, a paused primary, slots moved or migrating).

The traffic is bounded in time and sent to 127.0.0.1 only:

* **readers** at a steady rate (each thread paced to ``rate`` requests/s), over
  hot items that nobody writes -- the hit ratio and the slow queries per key --
  and over the written items -- staleness, seen from other clients;
* **writers**, each owning one item in a read-your-writes mode (``delete`` or
  ``write-through``): ``PUT``, then at once ``GET`` it back.

Every request is an :class:`Op` (invoke and complete on one monotonic clock,
status, version, ``X-Cache`` and the source the JSON names). :func:`judge`
turns a history and the event's window into the figures the drills publish:

* 500, 502 and 504 (and connection errors), with 503s counted apart;
* p99 and maximum latency of the requests invoked during the event;
* recovery: seconds from the event's start until the hit ratio (the lab's one
  definition: HIT, STALE or a worker's local copy, over every lookup) is back
  within 5 points of its value before the event, and stays there for 5 s;
* read-your-writes, as the engine's checker judges it: once a ``PUT`` that
  told the cache (``cache_action`` not ``failed``) returned version *v*, a read
  of that item invoked later returns *v* or newer, unless it is a documented
  degradation (``Cache-Status: ...; detail=redis-unavailable``);
* staleness: the reads (any client) that returned an older version than one
  confirmed before they began, and by how long.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

SERVER_ERRORS = {500, 502, 504, 0}  # 0: no HTTP answer at all
RECOVERY_POINTS = 0.05
RECOVERY_HOLD_SECONDS = 5.0


@dataclass
class Op:
    kind: str  # read | write
    item: int
    mode: str
    process: str
    invoke: float
    complete: float = 0.0
    status: int = 0
    version: int | None = None
    cache: str = ""  # X-Cache
    source: str = ""  # memory | redis | database | local (the JSON's "source")
    detail: str = ""  # the Cache-Status detail, or a PUT's cache_action
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.complete - self.invoke) * 1000

    @property
    def cached(self) -> bool:
        """Answered from a cache (the lab's one definition of a hit)."""
        return self.cache in ("HIT", "STALE") or (self.cache == "BYPASS" and self.source == "local")

    @property
    def degraded(self) -> bool:
        return "redis-unavailable" in self.detail


@dataclass
class Traffic:
    """Readers and writers through Nginx (see the module docstring)."""

    base_url: str
    hot_items: list[int]
    written: dict[int, str]  # item -> mode (delete | write-through)
    token: str
    readers: int = 6
    rate: float = 15.0  # requests/s per reader
    seconds: float = 120.0  # a hard bound on the run
    ops: list[Op] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        self.deadline = time.monotonic() + self.seconds
        for n in range(self.readers):
            self._threads.append(threading.Thread(target=self._reader, args=(n,), daemon=True))
        for item in self.written:
            self._threads.append(threading.Thread(target=self._writer, args=(item,), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def count(self) -> int:
        return len(self.ops)

    # -- the clients --------------------------------------------------------------------
    def _record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def _get(self, session: requests.Session, item: int, mode: str, process: str) -> Op:
        op = Op("read", item, mode, process, time.monotonic())
        try:
            answer = session.get(f"{self.base_url}/api/items/{item}?mode={mode}", timeout=30)
            op.status = answer.status_code
            op.cache = answer.headers.get("X-Cache", "")
            op.detail = _detail(answer.headers.get("Cache-Status", ""))
            if answer.status_code == 200:
                body = answer.json()
                op.version = int(body["item"]["version"])
                op.source = str(body.get("source") or "")
        except (requests.RequestException, ValueError, KeyError) as exc:
            op.error = type(exc).__name__
        op.complete = time.monotonic()
        self._record(op)
        return op

    def _reader(self, n: int) -> None:
        session = requests.Session()
        plan = [(item, "delete") for item in self.hot_items]
        plan += list(self.written.items())
        interval = 1.0 / self.rate
        next_send = time.monotonic()
        i = n
        while self.running():
            item, mode = plan[i % len(plan)]
            i += self.readers
            self._get(session, item, mode, f"reader-{n}")
            next_send += interval
            pause = next_send - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)  # pacing the generator: a steady rate
            else:
                next_send = time.monotonic()  # behind: no catch-up burst

    def _writer(self, item: int) -> None:
        session = requests.Session()
        mode = self.written[item]
        headers = {"Authorization": f"Bearer {self.token}"}
        n = 0
        while self.running():
            n += 1
            op = Op("write", item, mode, f"writer-{item}", time.monotonic())
            try:
                answer = session.put(
                    f"{self.base_url}/api/items/{item}?mode={mode}",
                    json={"payload": f"w{n}"},
                    headers=headers,
                    timeout=30,
                )
                op.status = answer.status_code
                if answer.status_code == 200:
                    body = answer.json()
                    op.version = int(body["item"]["version"])
                    op.detail = str(body.get("cache_action", ""))
            except (requests.RequestException, ValueError, KeyError) as exc:
                op.error = type(exc).__name__
            op.complete = time.monotonic()
            self._record(op)
            self._get(session, item, mode, f"writer-{item}")


def _detail(cache_status: str) -> str:
    for part in cache_status.split(";"):
        part = part.strip()
        if part.startswith("detail="):
            return part.split("=", 1)[1]
    return ""


# -- judging ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def hit_ratio(ops: Iterable[Op]) -> float | None:
    lookups = [op for op in ops if op.kind == "read" and op.status in (200, 404, 503)]
    if not lookups:
        return None
    return sum(op.cached for op in lookups) / len(lookups)


def recovery_seconds(ops: list[Op], start: float, baseline: float | None) -> float | None:
    """Seconds from ``start`` until the per-second hit ratio is within 5 points of
    ``baseline`` and stays there for 5 s (None: not within the history)."""
    if baseline is None:
        return None
    reads = [op for op in ops if op.kind == "read" and op.invoke >= start]
    if not reads:
        return None
    last = max(op.invoke for op in reads)
    seconds = int(last - start)
    buckets: list[list[Op]] = [[] for _ in range(seconds + 1)]
    for op in reads:
        buckets[int(op.invoke - start)].append(op)
    ratios = [hit_ratio(bucket) for bucket in buckets]
    hold = int(RECOVERY_HOLD_SECONDS)
    for first in range(0, len(ratios) - hold + 1):
        window = ratios[first : first + hold]
        if all(r is not None and abs(r - baseline) <= RECOVERY_POINTS for r in window):
            return float(first)
    return None


def read_your_writes(ops: list[Op]) -> tuple[list[dict[str, Any]], list[float]]:
    """Violations (a read older than a write that had returned before it began, in
    a read-your-writes mode, not a documented degradation) and every stale read's
    staleness in seconds (same rule, any read)."""
    writes: dict[int, list[Op]] = {}
    for op in ops:
        if op.kind == "write" and op.status == 200 and op.version is not None:
            if op.detail != "failed":  # the cache was not told: documented (ages out by TTL)
                writes.setdefault(op.item, []).append(op)
    for item_writes in writes.values():
        item_writes.sort(key=lambda w: w.complete)
    violations: list[dict[str, Any]] = []
    staleness: list[float] = []
    for read in ops:
        if read.kind != "read" or read.status != 200 or read.version is None:
            continue
        confirmed = [w for w in writes.get(read.item, []) if w.complete < read.invoke]
        if not confirmed:
            continue
        newest = max(confirmed, key=lambda w: w.version or 0)
        if read.version >= (newest.version or 0):
            continue
        first_newer = min(
            (w for w in confirmed if (w.version or 0) > read.version), key=lambda w: w.complete
        )
        staleness.append(read.invoke - first_newer.complete)
        if not read.degraded:
            violations.append(
                {
                    "item": read.item,
                    "mode": read.mode,
                    "read_version": read.version,
                    "written_version": newest.version,
                    "after_ms": round((read.invoke - newest.complete) * 1000, 1),
                    "cache": read.cache,
                    "source": read.source,
                    "process": read.process,
                }
            )
    return violations, staleness


def judge(
    ops: list[Op],
    event_start: float,
    event_end: float,
    slow_queries_by_item: dict[int, int] | None = None,
    baseline_seconds: float = 10.0,
) -> dict[str, Any]:
    """The drill's figures (see the module docstring)."""
    ops = sorted(ops, key=lambda op: op.invoke)
    during = [op for op in ops if event_start <= op.invoke <= event_end]
    before = [op for op in ops if event_start - baseline_seconds <= op.invoke < event_start]
    baseline = hit_ratio(before)
    violations, staleness = read_your_writes(ops)
    latencies = [op.latency_ms for op in during]
    errors = [op for op in ops if op.status in SERVER_ERRORS]
    figures: dict[str, Any] = {
        "requests": len(ops),
        "requests_during_event": len(during),
        "event_seconds": round(event_end - event_start, 2),
        "server_errors": len(errors),
        "server_errors_by_status": _count(op.status for op in errors),
        "status_503": sum(op.status == 503 for op in ops),
        "degraded_answers": sum(op.degraded for op in ops),
        "p99_ms_during_event": _round(percentile(latencies, 0.99)),
        "max_ms_during_event": _round(max(latencies, default=None)),
        "p50_ms_during_event": _round(statistics.median(latencies) if latencies else None),
        "hit_ratio_before": _round(baseline, 4),
        "hit_ratio_during_event": _round(hit_ratio(during), 4),
        "recovery_seconds": recovery_seconds(ops, event_start, baseline),
        "writes": sum(op.kind == "write" and op.status == 200 for op in ops),
        "read_your_writes_violations": len(violations),
        "violations": violations[:10],
        "stale_reads": len(staleness),
        "staleness_max_ms": _round(max(staleness, default=0.0) * 1000),
        "first_errors": [asdict(op) for op in errors[:5]],
    }
    if slow_queries_by_item is not None:
        figures["slow_queries_during_event"] = sum(slow_queries_by_item.values())
        figures["max_slow_queries_per_key"] = max(slow_queries_by_item.values(), default=0)
    return figures


def _count(values: Iterable[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# -- moving slots ---------------------------------------------------------------------------
def move_slots(stack: Any, source: Any, target: Any, slots: list[int], finish: bool = True) -> int:
    """Move ``slots`` from ``source`` to ``target`` (cluster nodes of ``stack``) with
    the protocol ``valkey-cli --cluster reshard`` follows -- IMPORTING on the
    target, MIGRATING on the source, MIGRATE every key, SETSLOT NODE on every
    primary -- each step pipelined across the slots (valkey-cli sends one slot
    at a time: 5,461 slots took it 10 min 49 s on this 2-core machine under
    load). With ``finish=False`` the slots stay MIGRATING with their keys moved:
    a client asking the source for them gets ASK. Returns the keys moved."""
    primaries = stack.primaries()
    src, dst = stack.node_client(source.service), stack.node_client(target.service)
    try:
        _pipelined(dst, [("CLUSTER", "SETSLOT", s, "IMPORTING", source.id) for s in slots])
        _pipelined(src, [("CLUSTER", "SETSLOT", s, "MIGRATING", target.id) for s in slots])
        moved = 0
        while True:  # a MIGRATING source creates no key: this ends
            found = _pipelined(src, [("CLUSTER", "GETKEYSINSLOT", s, 1000) for s in slots])
            keys = [key for batch in found for key in batch]
            if not keys:
                break
            for start in range(0, len(keys), 100):
                chunk = keys[start : start + 100]
                src.execute_command(
                    "MIGRATE", target.service, 6379, "", 0, 5000, "REPLACE", "KEYS", *chunk
                )
                moved += len(chunk)
        if finish:
            finish_move(stack, slots, source, target, primaries)
        return moved
    finally:
        src.close()
        dst.close()


def finish_move(
    stack: Any, slots: list[int], source: Any, target: Any, primaries: Any = None
) -> None:
    """SETSLOT NODE on the target, the source, then every other primary."""
    primaries = primaries or stack.primaries()
    order = [target, source] + [p for p in primaries if p.id not in (source.id, target.id)]
    for node in order:
        client = stack.node_client(node.service)
        try:
            _pipelined(client, [("CLUSTER", "SETSLOT", s, "NODE", target.id) for s in slots])
        finally:
            client.close()


def _pipelined(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


def error_count(stack: Any, service: str, kind: str) -> int:
    """Error replies of one kind (MOVED, ASK, TRYAGAIN) a node has sent (INFO errorstats)."""
    client = stack.node_client(service)
    try:
        stats = client.info("errorstats")
    finally:
        client.close()
    entry = stats.get(f"errorstat_{kind}", {})
    return int(entry.get("count", 0)) if isinstance(entry, dict) else 0
