"""What one request asked for (:class:`Target`) and what it got (:class:`Lookup`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .entry import Entry
from .local import LocalEntry

HIT, STALE, MISS, BYPASS = "HIT", "STALE", "MISS", "BYPASS"
# Where the answer came from: this worker's memory (tier 1), Redis (tier 2),
# the database, or this worker's last copy while Redis is unavailable.
MEMORY, REDIS, DATABASE, LOCAL = "memory", "redis", "database", "local"


@dataclass(frozen=True)
class Target:
    """One cache entry: which source and row, under which key."""

    source: str  # "version" | "item"
    ident: int
    key: str
    guarded: bool = True  # writes compare (version, fence); False shows the races
    # Its invalidation mode promises read-your-writes across workers: tier 1 may
    # serve it only while tracking keeps every copy coherent, never from an
    # uncovered copy (listener starting, down, or refused: MEMORY_FALLBACK_TTL_MS).
    read_your_writes: bool = False

    @property
    def lock_key(self) -> str:
        return f"{self.key}:lock"


@dataclass
class Lookup:
    """How one request was served: rendered into the page, the JSON and headers."""

    target: Target
    strategy: str
    result: str  # HIT | STALE | MISS | BYPASS
    tier: str  # memory | redis | database | local
    value: dict[str, Any]
    entry: Entry | None = None
    local: LocalEntry | None = None  # carries the bytes prepared for this generation
    detail: str = ""  # why: collapsed, lock-timeout, redis-unavailable, request, ...
    ttl_remaining: float | None = None
    stored: bool = False
    # The query's answer lost to a newer write already in Redis (a tombstone,
    # a newer entry): right for the request that ran it, never to be shared.
    superseded: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def metric_result(self) -> str:
        if self.tier == LOCAL:
            return "local"
        if self.detail == "collapsed":
            return "collapsed"
        return self.result.lower()


class Timer:
    """Durations of the steps of one lookup, in milliseconds (Server-Timing)."""

    __slots__ = ("timings",)

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def add(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - started) * 1000
