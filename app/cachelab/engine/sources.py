"""What a miss runs: the slow queries, timed, and turned into cache entries.

``version``: ``SELECT slow_version()`` (the seed page; never changes, no data
version). ``item``: ``SELECT * FROM slow_item(id)`` (a row that writes change;
its ``version`` orders the cache writes).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..config import Settings
from ..postgres.database import Database, DatabaseUnavailable
from .entry import Entry, jittered_ttl
from .lookup import Target, Timer


class NotFound(Exception):
    """The row does not exist (answered 404, never cached)."""


@dataclass(frozen=True)
class Loaded:
    value: dict[str, Any]
    version: int | None
    seconds: float


class Loader:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        rng: random.Random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self.rng = rng
        self.wall = wall

    def load(self, target: Target, timer: Timer) -> Loaded:
        """Run the target's slow query; :class:`DatabaseUnavailable` on failure."""
        started = time.perf_counter()
        outcome = "error"
        try:
            if target.source == "item":
                row = self.db.fetch_item(target.ident)
                if row is None:
                    outcome = "ok"
                    raise NotFound(f"no item {target.ident}")
                value, version = row, int(row["version"])
            else:
                value = {"version": self.db.fetch_slow_version(), "item": target.ident}
                version = None
            outcome = "ok"
        except DatabaseUnavailable:
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.SLOW_QUERY_SECONDS[(target.source, outcome)].observe(elapsed)
            timer.add("db", started)
        return Loaded(value, version, elapsed)

    def entry(self, loaded: Loaded, fence: int, grace: bool = True) -> Entry:
        """A new entry for ``loaded``: jittered TTL, grace (swr) or none (cache-aside)."""
        return Entry(
            value=loaded.value,
            fence=fence,
            ttl=jittered_ttl(
                self.settings.cache_ttl_seconds, self.settings.cache_jitter_ratio, self.rng
            ),
            grace=float(self.settings.cache_grace_seconds) if grace else 0.0,
            delta=loaded.seconds,
            created=self.wall(),
            version=loaded.version,
        )
