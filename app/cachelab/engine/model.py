"""The engine's values: what a request asks for, what Redis stores, what it gets.

:class:`Target`
    One cache entry: which source and row, under which key. Every key of one
    entry -- the entry itself (or its tombstone, or its "not found" marker),
    its lease and its fence -- shares one hash tag, ``{...}``, so a Lua script
    may touch them together on a Redis Cluster (:mod:`cachelab.engine.keys`).
:class:`Entry`
    What Redis stores under the entry's key, as JSON (format 3).
:class:`Lookup`
    How one request was served: rendered into the page, the JSON and headers.

Rules of an entry
-----------------
* **Freshness comes from Redis' own TTL, never from wall clocks.** An entry is
  stored with ``PX = (ttl + grace) * 1000``; a reader asks for ``PTTL`` in the
  same round trip and computes ``soft_remaining = pttl - grace``. Writers and
  readers on different machines never compare their clocks (``created`` is
  informational only).
* **Writes are ordered by ``(version, fence)``.** ``version`` is the data's own
  version (an item's row version; -1 for data without one) and ``fence`` a
  fencing token issued per key by Redis when a writer wins the key's lease or
  writes through. A guarded write replaces the stored entry only if it is
  newer, so a late writer can never overwrite a newer value.
* **Three kinds.** A *value*; a *tombstone*, which marks a deleted entry with
  the version that deleted it (it reads as a miss; a fill is accepted over it
  only if it read that version or a newer one); *absent*, a cached "not found"
  (version -1: any row that appears is newer), kept for ``NEGATIVE_TTL_SECONDS``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tier1 import Copy

FORMAT = 3
VALUE, TOMBSTONE, ABSENT = "value", "tombstone", "absent"
KINDS = (VALUE, TOMBSTONE, ABSENT)
NO_VERSION = -1

# How a request was served (X-Cache) and which tier answered.
HIT, STALE, MISS, BYPASS = "HIT", "STALE", "MISS", "BYPASS"
MEMORY, REDIS, DATABASE, LOCAL = "memory", "redis", "database", "local"


class NotFound(Exception):
    """The source has no such row (cached as ``absent`` for a short time)."""


class SourceUnavailable(Exception):
    """The source (PostgreSQL) could not answer in time: down, paused, failing."""


@dataclass(frozen=True)
class Target:
    """One cache entry: which source and row, under which key."""

    source: str  # "version" | "item"
    ident: int
    key: str  # <namespace>:v3:{<source>:...}
    guarded: bool = True  # writes compare (version, fence); False shows the races
    # Its invalidation mode promises read-your-writes across workers: tier 1 may
    # serve it only from a copy that tracking keeps coherent, never from an
    # uncovered one (listener starting, down, refused: MEMORY_FALLBACK_TTL_MS).
    read_your_writes: bool = False

    @property
    def lease_key(self) -> str:
        return f"{self.key}:lease"

    @property
    def fence_key(self) -> str:
        return f"{self.key}:fence"


@dataclass(frozen=True)
class Loaded:
    """What the source returned for a target, and how long the query took."""

    value: dict[str, Any]
    version: int | None
    seconds: float


@dataclass(frozen=True)
class Entry:
    value: dict[str, Any]
    fence: int
    ttl: float  # soft lifetime, seconds (already jittered)
    grace: float  # seconds Redis keeps it after the soft expiry (0: cache-aside)
    delta: float  # seconds the query took: XFetch's recompute time
    created: float  # the writer's wall clock; shown, never compared
    version: int | None = None
    kind: str = VALUE

    @property
    def px(self) -> int:
        """The Redis TTL in milliseconds: soft lifetime plus grace."""
        return max(1, int((self.ttl + self.grace) * 1000))

    @property
    def order(self) -> tuple[int, int]:
        return (NO_VERSION if self.version is None else self.version, self.fence)

    @property
    def tombstone(self) -> bool:
        return self.kind == TOMBSTONE

    @property
    def absent(self) -> bool:
        return self.kind == ABSENT

    def encode(self) -> bytes:
        document = {"f": FORMAT, **asdict(self)}
        return json.dumps(document, separators=(",", ":")).encode()

    def soft_remaining(self, pttl_ms: int) -> float:
        """Seconds until the soft expiry, from Redis' PTTL (negative: stale)."""
        return pttl_ms / 1000 - self.grace


def decode(raw: bytes | str | None) -> Entry | None:
    """The entry in ``raw``, or None for a missing, other-format or corrupt value
    (read as a miss, never an error)."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("f") != FORMAT:
        return None
    try:
        entry = Entry(
            value=document["value"],
            fence=int(document["fence"]),
            ttl=float(document["ttl"]),
            grace=float(document["grace"]),
            delta=float(document["delta"]),
            created=float(document["created"]),
            version=None if document.get("version") is None else int(document["version"]),
            kind=str(document.get("kind", VALUE)),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if (
        not isinstance(entry.value, dict)
        or entry.kind not in KINDS
        or not entry.ttl >= 0
        or not entry.grace >= 0
    ):
        return None
    return entry


def new_entry(loaded: Loaded, fence: int, ttl: float, grace: float, created: float) -> Entry:
    return Entry(loaded.value, fence, ttl, grace, loaded.seconds, created, loaded.version)


def tombstone(version: int, fence: int, created: float) -> Entry:
    return Entry({}, fence, 0.0, 0.0, 0.0, created, version, TOMBSTONE)


def absent(fence: int, ttl: float, delta: float, created: float) -> Entry:
    return Entry({}, fence, ttl, 0.0, delta, created, NO_VERSION, ABSENT)


def jittered_ttl(ttl: float, ratio: float, rng: random.Random) -> float:
    """Up to ``ratio`` shorter than ``ttl``, never longer, so keys filled
    together do not all expire together."""
    return ttl * (1 - ratio * rng.random())


def xfetch_due(entry: Entry, soft_remaining: float, beta: float, rng: random.Random) -> bool:
    """XFetch (Vattani et al., PVLDB 2015): refresh early when
    ``delta * beta * -ln(u) >= time left``, u uniform in (0, 1].

    With t seconds left the chance per read is ``exp(-t / (beta * delta))``.
    The lead is capped at half the TTL: at R reads/s the expected lead grows
    like ``delta * ln(R * delta)``, so with a TTL close to the query time a
    hot key would otherwise be refreshed back to back.
    """
    if beta <= 0 or soft_remaining <= 0 or entry.kind != VALUE:
        return False
    lead = -entry.delta * beta * math.log(1.0 - rng.random())
    return min(lead, entry.ttl / 2) >= soft_remaining


@dataclass
class Lookup:
    """How one request was served: rendered into the page, the JSON and headers."""

    target: Target
    strategy: str
    result: str  # HIT | STALE | MISS | BYPASS
    tier: str  # memory | redis | database | local
    entry: Entry
    copy: Copy | None = None  # this worker's copy: carries the bytes prepared for it
    detail: str = ""  # why: collapsed, fill-timeout, redis-unavailable, request, ...
    ttl_remaining: float | None = None
    stored: bool = False
    # The query's answer lost to a newer write (a tombstone, a newer entry, a
    # newer row): right for the request that ran it, never to be shared.
    superseded: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> dict[str, Any]:
        return self.entry.value

    @property
    def found(self) -> bool:
        """False for a (cached or just learnt) "not found": the answer is a 404."""
        return not self.entry.absent

    @property
    def metric_result(self) -> str:
        if self.tier == LOCAL:
            return "local"
        if self.detail == "collapsed":
            return "collapsed"
        return self.result.lower()


class Timer:
    """When one lookup began (``started``, on the engine's monotonic clock) and the
    durations of its steps, in milliseconds (Server-Timing)."""

    __slots__ = ("started", "timings")

    def __init__(self, started: float = 0.0) -> None:
        self.started = started
        self.timings: dict[str, float] = {}

    def add(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - started) * 1000
