"""A cache entry: its JSON format, its freshness, and the order of writes.

Rules
-----
* **Freshness comes from Redis' own TTL, never from wall clocks.** An entry is
  stored with ``PX = (ttl + grace) * 1000``; a reader asks for ``PTTL`` in the
  same round trip and computes ``soft_remaining = pttl - grace``. Writers and
  readers on different machines never compare their clocks (``created`` is
  informational only).
* **Writes are ordered by ``(version, fence)``.** ``version`` is the data's
  own version (an item's row version; absent for ``slow_version()``), and
  ``fence`` a fencing token from one Redis counter, taken when a writer wins
  the fill lock or writes through. A guarded write replaces the stored entry
  only if it is newer, so a late writer (a refresh whose lease expired, a fill
  that read the row before an update) can never overwrite a newer value.
* **A tombstone marks a deleted entry with the version that deleted it.** It
  reads as a miss; a fill is accepted over it only if it read that version or
  a newer one (the fix for delete-then-stale-refill).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

FORMAT = 2


@dataclass(frozen=True)
class Entry:
    value: dict[str, Any]
    fence: int
    ttl: float  # soft lifetime, seconds (already jittered)
    grace: float  # seconds Redis keeps it after the soft expiry (0: cache-aside)
    delta: float  # seconds the query took: XFetch's recompute time
    created: float  # the writer's wall clock; shown, never compared
    version: int | None = None
    tombstone: bool = False

    @property
    def px(self) -> int:
        """The Redis TTL in milliseconds: soft lifetime plus grace."""
        return max(1, int((self.ttl + self.grace) * 1000))

    @property
    def order(self) -> tuple[int, int]:
        return (-1 if self.version is None else self.version, self.fence)

    def encode(self) -> bytes:
        document = {"f": FORMAT, **asdict(self)}
        return json.dumps(document, separators=(",", ":")).encode()

    def soft_remaining(self, pttl_ms: int) -> float:
        """Seconds until the soft expiry, from Redis' PTTL (negative: stale)."""
        return pttl_ms / 1000 - self.grace


def decode(raw: bytes | str | None) -> Entry | None:
    """The entry in ``raw``, or None for a missing, old-format or corrupt value
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
            tombstone=bool(document.get("tombstone", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(entry.value, dict) or entry.ttl < 0 or entry.grace < 0:
        return None
    return entry


def tombstone(version: int, fence: int, created: float) -> Entry:
    return Entry(
        value={},
        fence=fence,
        ttl=0.0,
        grace=0.0,
        delta=0.0,
        created=created,
        version=version,
        tombstone=True,
    )


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
    if beta <= 0 or soft_remaining <= 0:
        return False
    lead = -entry.delta * beta * math.log(1.0 - rng.random())
    return min(lead, entry.ttl / 2) >= soft_remaining
