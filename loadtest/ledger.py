"""The writers' record of committed versions, and how every read is judged against it.

Writers ``PUT /api/items/<id>?mode=M`` and record every committed version with
the moment its answer arrived (an upper bound of the commit time). Readers
``GET`` the same items and compare: a read is **stale** when it started after
a newer version had been confirmed to a writer, and its **staleness** is the
time since the first such version was confirmed. A writer also reads its own
item right after each write: an older version there is a **read-your-writes
violation**. Nothing here trusts the app's own account.

Used inside Locust (loadtest/locustfile.py: ``ItemWriter`` and ``ItemReader``
share one :class:`Ledger` per process) and by the staleness benchmark
(:mod:`loadtest.staleness`), which runs them and reports.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from loadtest.stats import percentile

# Variants run by default: each mode as shipped, the unguarded delete and
# write-through that show the race each guard fixes, and the edge tier (Nginx's
# micro-cache, CACHE_STRATEGY=edge) in front of write-through.
VARIANTS = (
    "ttl",
    "delete",
    "delete-unguarded",
    "write-through",
    "write-through-unguarded",
    "notify",
    "edge",
)
STRATEGY_OF = {"edge": "edge"}  # a variant that needs the lab on another strategy
ITEMS_PER_VARIANT = 20


def variant_query(variant: str) -> str:
    """``delete-unguarded`` -> ``mode=delete&guard=off``; ``edge`` -> write-through
    (behind the edge: the app's copy is current at once, the edge's is not)."""
    if variant == "edge":
        return "mode=write-through"
    if variant.endswith("-unguarded"):
        return f"mode={variant.removesuffix('-unguarded')}&guard=off"
    return f"mode={variant}"


def variant_items(variant: str) -> range:
    """Each variant writes and reads its own items, so runs never interfere."""
    index = VARIANTS.index(variant) if variant in VARIANTS else 0
    first = 1 + index * ITEMS_PER_VARIANT
    return range(first, first + ITEMS_PER_VARIANT)


@dataclass
class VariantStats:
    reads: int = 0
    stale_reads: int = 0
    staleness_s: list[float] = field(default_factory=list)
    writes: int = 0
    write_latency_s: list[float] = field(default_factory=list)
    own_reads: int = 0
    ryw_violations: int = 0
    errors: int = 0


class Ledger:
    """Committed versions per (variant, item), as writers saw them confirmed."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._commits: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
        self.stats: dict[str, VariantStats] = defaultdict(VariantStats)

    def committed(
        self,
        variant: str,
        item: int,
        version: int,
        confirmed_at: float,
        latency: float | None = None,
    ) -> None:
        with self._lock:
            self._commits[(variant, item)].append((version, confirmed_at))
            if latency is not None:
                stats = self.stats[variant]
                stats.writes += 1
                stats.write_latency_s.append(latency)

    def staleness(self, variant: str, item: int, version: int, started: float) -> float | None:
        """Seconds since a newer version than ``version`` was confirmed, if one
        was confirmed before the read started; None for a fresh read."""
        with self._lock:
            newer = [
                at
                for v, at in self._commits.get((variant, item), ())
                if v > version and at <= started
            ]
        return started - min(newer) if newer else None

    def read(self, variant: str, item: int, version: int, started: float) -> float | None:
        age = self.staleness(variant, item, version, started)
        with self._lock:
            stats = self.stats[variant]
            stats.reads += 1
            if age is not None:
                stats.stale_reads += 1
                stats.staleness_s.append(age)
        return age

    def own_read(self, variant: str, written: int, read: int) -> bool:
        """A writer's read of its own item right after its write."""
        violated = read < written
        with self._lock:
            stats = self.stats[variant]
            stats.own_reads += 1
            stats.ryw_violations += violated
        return not violated

    def error(self, variant: str) -> None:
        with self._lock:
            self.stats[variant].errors += 1

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {variant: summarize(stats) for variant, stats in self.stats.items()}


def summarize(stats: VariantStats) -> dict:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "reads": stats.reads,
        "stale_reads": stats.stale_reads,
        "stale_ratio": round(stats.stale_reads / stats.reads, 4) if stats.reads else None,
        "staleness_p50_ms": ms(percentile(stats.staleness_s, 50)),
        "staleness_p99_ms": ms(percentile(stats.staleness_s, 99)),
        "staleness_max_ms": ms(max(stats.staleness_s, default=None)),
        "writes": stats.writes,
        "own_reads": stats.own_reads,
        "ryw_violations": stats.ryw_violations,
        "errors": stats.errors,
        "write_p50_ms": ms(percentile(stats.write_latency_s, 50)),
        "write_p99_ms": ms(percentile(stats.write_latency_s, 99)),
    }
