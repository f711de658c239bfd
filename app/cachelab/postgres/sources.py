"""The lab's two sources, as the cache engine sees them (:class:`cachelab.engine.fills.Source`).

``version``: ``SELECT slow_version()`` (the seed page; never changes, no data
version). ``item``: ``SELECT * FROM slow_item(id)`` (a row that writes change;
its ``version`` orders the cache writes).

Rules
-----
* **Ids outside the table are refused without the slow query.** The highest
  item id is known (an index lookup, re-read when an id above it is asked for,
  at most once a second and never waited for, and raised at once by the
  ``INSERT`` notifications of :mod:`cachelab.postgres.notify`); an id above it
  is :class:`NotFound` at once (the items API answers it before the cache).
  Right before the slow query, a range never learned (the lookups so far
  failed) is asked again whatever the once-a-second limit, waiting for a
  lookup in flight and taking its answer: the query would reach the database
  anyway, and a failure a moment ago must not let an id above the table
  through once the database is back. A missing id inside the range runs the
  query and is cached as "not found" by the engine.
* **Is a row still what a fill read?** A primary-key lookup of its version,
  asked right before the fill writes the cache, so a fill that read an old row
  is refused even when the tombstone that should stop it is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .. import metrics
from ..engine.model import Loaded, NotFound, Target
from .database import Database, DatabaseUnavailable

_RANGE_RECHECK_SECONDS = 1.0
# Database.max_item_id's connect budget: a waiter gives up no later than the lookup.
_LOOKUP_WAIT_SECONDS = 2.0


class LabSources:
    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.clock = clock
        self._max_id: int | None = None
        self._checked_at = float("-inf")  # when the last lookup started
        self._lookups = 0  # lookups ended, answered or failed
        self._lock = threading.Lock()

    def load(self, target: Target) -> Loaded:
        if target.source == "item" and not self.may_exist(target.ident, querying=True):
            raise NotFound(f"no item {target.ident}")
        started = time.perf_counter()
        outcome = "error"
        try:
            if target.source == "item":
                row = self.db.fetch_item(target.ident)
                outcome = "ok"
                if row is None:
                    raise NotFound(f"no item {target.ident}")
                return Loaded(row, int(row["version"]), time.perf_counter() - started)
            value = {"version": self.db.fetch_slow_version(), "item": target.ident}
            outcome = "ok"
            return Loaded(value, None, time.perf_counter() - started)
        finally:
            metrics.SLOW_QUERY_SECONDS[(target.source, outcome)].observe(
                time.perf_counter() - started
            )

    def still_current(self, target: Target, version: int | None) -> bool:
        if target.source != "item":
            return True
        if version is None and not self.may_exist(target.ident):
            return True
        return self.db.item_version(target.ident) == version

    def may_exist(self, item_id: int, *, querying: bool = False) -> bool:
        """False only for an id above the highest one known. Every item read asks
        this before the cache, so it never waits: the highest id is re-read when
        an id above it is asked for, at most once a second and by one request at
        a time; meanwhile, and while the database cannot say, the last answer
        stands (none yet: True, and the query decides).

        ``querying``: the slow query is next. A range never learned is then
        asked whatever the limit (waiting up to the lookup's own budget for
        one in flight, whose answer serves every request that waited for it).
        """
        known = self._max_id
        if known is not None and item_id <= known:
            return True
        must_ask = querying and known is None
        lookups_seen = self._lookups
        if not must_ask and self._checked_recently():
            return known is None or item_id <= known
        if must_ask:
            acquired = self._lock.acquire(timeout=_LOOKUP_WAIT_SECONDS)
        else:
            acquired = self._lock.acquire(blocking=False)
        if not acquired:
            return known is None or item_id <= known
        try:
            known = self._max_id
            waited_for_one = self._lookups != lookups_seen
            must_ask = querying and known is None
            if waited_for_one or (not must_ask and self._checked_recently()):
                return known is None or item_id <= known
            return self._look_up(item_id)
        finally:
            self._lock.release()

    def _checked_recently(self) -> bool:
        return self.clock() - self._checked_at < _RANGE_RECHECK_SECONDS

    def _look_up(self, item_id: int) -> bool:
        """Ask the database (the lock held). A failed lookup counts as one too:
        those who waited for it take its "cannot tell"."""
        self._checked_at = self.clock()
        try:
            self._max_id = self.db.max_item_id()
        except DatabaseUnavailable:
            return True  # cannot tell: the query decides
        finally:
            self._lookups += 1
        return item_id <= self._max_id

    def saw_item(self, item_id: int) -> None:
        """A row with this id was inserted (a notification): it exists now."""
        with self._lock:
            if self._max_id is None or item_id > self._max_id:
                self._max_id = item_id
