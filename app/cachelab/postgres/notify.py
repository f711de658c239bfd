"""PostgreSQL change events: ``LISTEN cachelab_items`` in every app worker.

The ``items`` table's triggers send ``NOTIFY cachelab_items,
'<id>:<version>:<operation>'`` when a write commits -- through the app or
directly in SQL. Each worker's listener then

* invalidates the item in the ``notify`` mode's key space (a tombstone with
  that version; every worker does it, the first one wins, the others are
  no-ops);
* for an ``insert``, invalidates the item in *every* mode's key space -- a
  cached "not found" of that id must go -- and tells the sources that the id
  exists (:mod:`cachelab.postgres.sources`);
* remembers the newest committed version of every item and when it heard of
  it: the live staleness estimate of the dashboard compares what a read
  served with that (:meth:`Freshness.observe`).

A listener that loses its connection reconnects with back-off; NOTIFYs sent
while *every* listener was disconnected are lost, and those entries age out
by their TTL (a cached "not found" by ``NEGATIVE_TTL_SECONDS``).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import psycopg2
import psycopg2.extensions

from .. import metrics
from ..config import INVALIDATION_MODES, Settings
from ..engine.keys import item_target
from ..engine.store import CacheUnavailable
from ..engine.writes import Writer
from .sources import LabSources

log = logging.getLogger(__name__)
CHANNEL = "cachelab_items"
_REMEMBERED_ITEMS = 100_000


class Freshness:
    """The newest version PostgreSQL announced per item, and when it was heard."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._latest: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.connected = False

    def announce(self, item_id: int, version: int) -> None:
        with self._lock:
            known = self._latest.get(item_id)
            if known is None or version > known[0]:
                self._latest[item_id] = (version, self.clock())
                self._latest.move_to_end(item_id)
                if len(self._latest) > _REMEMBERED_ITEMS:
                    self._latest.popitem(last=False)

    def staleness(self, item_id: int, served_version: int) -> float | None:
        """Seconds since a newer version than ``served_version`` was announced,
        or None if the read was as new as anything announced."""
        known = self._latest.get(item_id)
        if known is None or served_version >= known[0]:
            return None
        # The first version after the one served was announced no later than
        # the newest one: the age of the newest is a lower bound.
        return max(0.0, self.clock() - known[1])

    def observe(self, mode: str, item_id: int, served_version: int) -> None:
        if not self.connected:
            return
        age = self.staleness(item_id, served_version)
        metrics.ITEM_READS[(mode, "stale" if age is not None else "fresh")].inc()
        if age is not None:
            metrics.ITEM_STALENESS[mode].observe(age)


class NotifyListener:
    def __init__(
        self, settings: Settings, writer: Writer, sources: LabSources, freshness: Freshness
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.sources = sources
        self.freshness = freshness
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pg-notify", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                backoff = 0.2
                self.freshness.connected = True
                while not self._stop.is_set():
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        while conn.notifies:
                            self.handle(conn.notifies.pop(0).payload)
            except psycopg2.Error as exc:
                log.warning("notify listener disconnected", extra={"reason": str(exc)[:200]})
            finally:
                self.freshness.connected = False
                if conn is not None:
                    conn.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _connect(self):
        settings = self.settings
        conn = psycopg2.connect(
            settings.database_url,
            connect_timeout=settings.db_connect_timeout_seconds,
            application_name="cachelab-notify",
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        return conn

    def handle(self, payload: str) -> None:
        """``<id>:<version>[:<operation>]`` -> tombstones, the range, the freshness book."""
        parts = payload.split(":")
        try:
            item_id, version = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            log.warning("bad notification", extra={"payload": payload[:100]})
            return
        operation = parts[2] if len(parts) > 2 else "update"
        self.freshness.announce(item_id, version)
        modes: tuple[str, ...] = ("notify",)
        if operation == "insert":
            self.sources.saw_item(item_id)
            modes = INVALIDATION_MODES
        namespace = self.settings.cache_namespace
        for mode in modes:
            for guarded in (True, False):
                target = item_target(namespace, item_id, mode, guarded)
                try:
                    self.writer.invalidate(target, version)
                except CacheUnavailable as exc:
                    metrics.NOTIFY_FAILURES.inc()
                    log.warning(
                        "notify invalidation failed",
                        extra={"key": target.key, "reason": str(exc)[:200]},
                    )
