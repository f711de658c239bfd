"""Degraded mode: Redis is unavailable (error, timeout, breaker open).

Rules
-----
* A worker that holds a copy of the key (:mod:`cachelab.engine.local`) serves it
  at once, fresh or stale, until its hard expiry -- never longer: the copy's
  deadlines came from Redis' TTL when it was read and are not extended by
  serving it. A stale copy is refreshed in the background, once per worker.
* A worker without a copy queries the database behind per-process single
  flight (and a fill slot), and keeps the result as its copy.
* An outage therefore costs about one query per key, worker and TTL, and
  answers are ``X-Cache: BYPASS`` with ``detail=redis-unavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import metrics
from ..config import Settings
from ..postgres.database import DatabaseUnavailable
from .admission import Admission
from .local import LocalEntries, LocalEntry
from .lookup import BYPASS, DATABASE, LOCAL, Lookup, Target, Timer
from .refresher import Refresher
from .singleflight import SingleFlight
from .sources import Loader

log = logging.getLogger(__name__)
DETAIL = "redis-unavailable"


class Degraded:
    def __init__(
        self,
        settings: Settings,
        local: LocalEntries,
        admission: Admission,
        loader: Loader,
        refresher: Refresher,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.local = local
        self.admission = admission
        self.loader = loader
        self.refresher = refresher
        self.clock = clock
        self.flights: SingleFlight[LocalEntry | None] = SingleFlight()

    def serve(self, target: Target, strategy: str, timer: Timer) -> Lookup:
        copy = self.local.last_copy(target.key)
        if copy is not None:
            left = copy.soft_deadline - self.clock()
            if left <= 0 and self.refresher.claim(self._flight(target)):
                self.refresher.submit(self._flight(target), lambda: self._refresh(target))
            return Lookup(
                target=target,
                strategy=strategy,
                result=BYPASS,
                tier=LOCAL,
                value=copy.entry.value,
                entry=copy.entry,
                local=copy,
                detail=DETAIL,
                ttl_remaining=left,
                timings_ms=dict(timer.timings),
            )
        with self.admission.miss():
            copy, _ = self.flights.do(
                target.key,
                lambda: self._admitted_load(target, timer),
                timeout=self.settings.fill_wait_seconds,
            )
        assert copy is not None
        return Lookup(
            target=target,
            strategy=strategy,
            result=BYPASS,
            tier=DATABASE,
            value=copy.entry.value,
            entry=copy.entry,
            local=copy,
            detail=DETAIL,
            ttl_remaining=copy.soft_deadline - self.clock(),
            timings_ms=dict(timer.timings),
        )

    def _admitted_load(self, target: Target, timer: Timer) -> LocalEntry | None:
        with self.admission.fill():
            return self._load(target, timer)

    def _load(self, target: Target, timer: Timer) -> LocalEntry | None:
        """Query and keep the result as this worker's copy (background refreshes
        run on the refresher's own threads and connections, not in fill slots)."""
        loaded = self.loader.load(target, timer)
        # Fence 0: any entry Redis has when it returns is newer than this copy.
        entry = self.loader.entry(loaded, fence=0)
        snapshot = self.local.snapshot(target.key)
        kept = self.local.put(
            target.key, entry, entry.ttl, entry.ttl + entry.grace, snapshot, servable=False
        )
        if kept is None:  # an invalidation raced: serve it this once without keeping it
            now = self.clock()
            kept = LocalEntry(entry, now + entry.ttl, now + entry.ttl + entry.grace, 0.0)
        return kept

    def _refresh(self, target: Target) -> None:
        outcome = "error"
        try:
            self.flights.do(
                target.key,
                lambda: self._load(target, Timer()),
                timeout=self.settings.fill_wait_seconds,
            )
            outcome = "ok"
        except DatabaseUnavailable as exc:
            log.warning("local refresh failed", extra={"key": target.key, "reason": str(exc)})
        except Exception:
            log.exception("local refresh crashed", extra={"key": target.key})
        finally:
            metrics.REFRESHES[("stale", outcome)].inc()

    @staticmethod
    def _flight(target: Target) -> str:
        return f"local:{target.key}"
