"""Cluster drills: steady traffic through Nginx, a recorded HTTP history, and the
figures of one event (a failover, a paused primary, slots moved or migrating).

The traffic (k6, from a container on the stack's own network) is bounded in
time:

* **readers** at a constant arrival rate (``rate`` requests/s in all, open
  loop), over hot items that nobody writes -- the hit ratio and the slow
  queries per key -- and over the written items -- staleness, seen from other
  clients;
* **writers**, each owning one item in a read-your-writes mode (``delete`` or
  ``write-through``): ``PUT``, then at once ``GET`` it back.

Every request is an :class:`Op` (invoke and complete on one monotonic clock,
status, version, ``X-Cache`` and the source the JSON names). :func:`judge`
turns a history and the event's window into the figures the drills publish:

* 500, 502 and 504 (and connection errors), with 503s counted apart;
* p99 and maximum latency of the requests invoked during the event;
* recovery: seconds from the event's start until the hit ratio (the lab's one
  definition: HIT, STALE or a worker's local copy, over every lookup) of the
  next 5 s is back within 5 points of its value before the event;
* read-your-writes, as the engine's checker judges it: once a ``PUT`` that
  told the cache (``cache_action`` not ``failed``) returned version *v*, a read
  of that item invoked later returns *v* or newer, unless it is a documented
  degradation (``Cache-Status: ...; detail=redis-unavailable``);
* staleness: the reads (any client) that returned an older version than one
  confirmed before they began, and by how long.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker.errors

from .stats import percentile  # the package's one definition (nearest rank)

SERVER_ERRORS = {500, 502, 504, 0}  # 0: no HTTP answer at all
K6_SCRIPT = Path(__file__).resolve().parent / "k6" / "drill.js"
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


class Traffic:
    """Readers and writers through Nginx, sent by k6 (loadtest/k6/drill.js) from a
    container on the stack's network for at most ``seconds`` (:meth:`stop` ends
    it sooner): a Go load generator keeps
    its rate on a saturated machine where Python threads in the test process
    did not (70 requests in 10 s instead of 600). The history is read back
    from k6's JSON output when it ends; times are the wall clock (the
    container's and this process' are the same kernel's)."""

    def __init__(
        self,
        stack: Any,
        hot_items: list[int],
        written: dict[int, str],
        token: str,
        rate: float = 60.0,
        seconds: float = 70.0,
    ) -> None:
        self.stack = stack
        self.hot_items = hot_items
        self.written = written
        self.token = token
        self.rate = rate
        self.seconds = seconds
        self.ops: list[Op] = []
        self.started = 0.0
        self.container: Any = None

    def __enter__(self) -> Traffic:
        name = f"{self.stack.project}-drill-k6"
        for old in self.stack.docker.containers.list(all=True, filters={"name": name}):
            old.remove(force=True)
        self.container = self.stack.docker.containers.run(
            k6_image(),
            ["run", "--quiet", "--no-summary", "--out", "json=/dev/stdout", "/scripts/drill.js"],
            detach=True,
            name=name,
            network=f"{self.stack.project}_default",
            environment={
                "BASE_URL": "http://nginx:8080",
                "HOT": ",".join(map(str, self.hot_items)),
                "WRITTEN": json.dumps([[item, mode] for item, mode in self.written.items()]),
                "RATE": str(self.rate),
                "DURATION": f"{self.seconds:g}s",
                "TOKEN": self.token,
            },
            volumes={str(K6_SCRIPT.parent): {"bind": "/scripts", "mode": "ro"}},
            read_only=True,
            security_opt=["no-new-privileges:true"],
            cap_drop=["ALL"],
            # Every request is its own k6 time series (its start and answer are
            # tags), so k6's memory grows with the run: 260 MB after 76 s of a
            # resharding drill at the default rate, when it was limited to 256m
            # and the kernel killed it. 1.5 GB covers the 300 s bound.
            mem_limit="1536m",
        )
        self.started = time.time()
        return self

    def elapsed(self) -> float:
        return time.time() - self.started

    def stop(self) -> None:
        """End the run now (k6 stops on SIGINT, and writes what it sent); a k6 that
        has already ended is left to :meth:`__exit__`, which says why it ended."""
        if self.container is None:
            return
        self.container.reload()
        if self.container.status == "running":
            try:
                self.container.kill(signal="SIGINT")
            except docker.errors.APIError:  # it ended between the two calls
                self.container.reload()
                if self.container.status == "running":
                    raise

    def __exit__(self, *exc: object) -> None:
        if self.container is None:
            return
        try:
            self.container.wait(timeout=self.seconds + 120)
            self.container.reload()
            if self.container.attrs["State"].get("OOMKilled"):
                raise RuntimeError(
                    f"the drill's k6 ran out of memory ({self.container.name}, "
                    f"{self.elapsed():.0f} s into the run): raise Traffic's mem_limit"
                )
            output = self.container.logs(stdout=True, stderr=False).decode(errors="replace")
            self.ops = parse_k6(output)
        finally:
            self.container.remove(force=True)


def k6_image() -> str:
    """K6_IMAGE (the stand-in on machines without a registry), else the official image."""
    return os.environ.get("K6_IMAGE") or "grafana/k6:1.1.0"


def parse_k6(output: str) -> list[Op]:
    """Every ``drill_op`` point of k6's JSON output, as an :class:`Op`."""
    ops = []
    for line in output.splitlines():
        if '"drill_op"' not in line or not line.startswith("{"):
            continue
        point = json.loads(line)
        if point.get("type") != "Point":
            continue
        data = point["data"]
        tags = data["tags"]
        invoke = int(tags["start"]) / 1000
        version = int(tags.get("version", "-1"))
        ops.append(
            Op(
                kind=tags["kind"],
                item=int(tags["item"]),
                mode=tags["mode"],
                process=tags.get("scenario", ""),
                invoke=invoke,
                complete=invoke + float(data["value"]) / 1000,
                status=int(tags.get("status", "0") or 0),
                version=None if version < 0 else version,
                cache=tags.get("cache", ""),
                source=tags.get("source", ""),
                detail=tags.get("detail", ""),
                error=tags.get("error", ""),
            )
        )
    return ops


def _detail(cache_status: str) -> str:
    for part in cache_status.split(";"):
        part = part.strip()
        if part.startswith("detail="):
            return part.split("=", 1)[1]
    return ""


# -- judging ------------------------------------------------------------------------------
def hit_ratio(ops: Iterable[Op]) -> float | None:
    lookups = [op for op in ops if op.kind == "read" and op.status in (200, 404, 503)]
    if not lookups:
        return None
    return sum(op.cached for op in lookups) / len(lookups)


def recovery_seconds(
    ops: list[Op], start: float, baseline: float | None, step: float = 0.25, minimum: int = 10
) -> float | None:
    """Seconds from ``start`` until the hit ratio of the next 5 s of lookups (at
    least ``minimum`` of them) is within 5 points of ``baseline`` (None: not
    within the history). A window, not per-second buckets: on a saturated
    machine a second may hold a handful of requests, and one miss among three
    says nothing."""
    if baseline is None:
        return None
    reads = sorted(
        (op for op in ops if op.kind == "read" and op.invoke >= start), key=lambda op: op.invoke
    )
    if not reads:
        return None
    offset = 0.0
    while start + offset + RECOVERY_HOLD_SECONDS <= reads[-1].invoke:
        low, high = start + offset, start + offset + RECOVERY_HOLD_SECONDS
        window = [op for op in reads if low <= op.invoke < high]
        ratio = hit_ratio(window)
        if (
            len(window) >= minimum
            and ratio is not None
            and abs(ratio - baseline) <= RECOVERY_POINTS
        ):
            return round(offset, 2)
        offset += step
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
        "p99_ms_during_event": _round(percentile(latencies, 99)),
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
        "during_event_by_answer": _by_answer(during),
    }
    if slow_queries_by_item is not None:
        figures["slow_queries_during_event"] = sum(slow_queries_by_item.values())
        figures["max_slow_queries_per_key"] = max(slow_queries_by_item.values(), default=0)
        figures["stampedes"] = stampedes(ops, event_start, event_end, slow_queries_by_item)
    return figures


def stampedes(
    ops: list[Op], event_start: float, event_end: float, slow_queries_by_item: dict[int, int]
) -> dict[str, dict[str, int]]:
    """Keys queried more often than one fill allows: ``{item: {queries,
    degraded}}``. One query per key while its lease lives; while Redis is
    unavailable to a worker (a saturated machine, a node failing over), the
    engine's documented degradation is one query per key *in that worker*, and
    each such query answers at least one read ``BYPASS`` from the database with
    ``redis-unavailable``: those answers, overlapping the event, allow one more
    query each."""
    degraded: dict[int, int] = {}
    for op in ops:
        overlaps = op.invoke <= event_end and (op.complete or op.invoke) >= event_start
        if overlaps and op.kind == "read" and op.degraded and op.source == "database":
            degraded[op.item] = degraded.get(op.item, 0) + 1
    return {
        str(item): {"queries": queries, "degraded": degraded.get(item, 0)}
        for item, queries in sorted(slow_queries_by_item.items())
        if queries > 1 + degraded.get(item, 0)
    }


def _by_answer(ops: list[Op]) -> dict[str, dict[str, float | int | None]]:
    """Count and median latency of the requests, by how they were answered."""
    groups: dict[str, list[float]] = {}
    for op in ops:
        how = f"{op.kind} {op.status} {op.cache or '-'}/{op.source or '-'}"
        if op.degraded:
            how += " degraded"
        groups.setdefault(how, []).append(op.latency_ms)
    return {
        how: {"count": len(values), "p50_ms": _round(statistics.median(values))}
        for how, values in sorted(groups.items())
    }


def _count(values: Iterable[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
