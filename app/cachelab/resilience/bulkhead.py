"""The bulkhead between hits and misses (admission control per worker).

A gthread worker has ``GUNICORN_THREADS`` threads. A hit needs one for
microseconds; a miss holds one for the whole query (seconds), and so does
every request waiting for a fill. Without a bound, a flood of cold misses takes
every thread and hits queue behind them.

Rules
-----
* **Misses** (``CACHE_MISS_SLOTS``): at most this many threads of a worker
  lead the fill of a distinct cold key -- running its query, or waiting for
  another process that holds its lease.
* **Queries** (``CACHE_FILL_SLOTS``): of those, at most this many run a query
  at once; each holds a database connection (``DB_POOL_SIZE`` covers them,
  the background refreshes and a reserve for writes and probes).
* **Followers** (``CACHE_FOLLOWER_SLOTS``): threads waiting for a fill already
  in flight in this worker. Bounded apart: they cost no query and no
  connection, and one answer serves them all, so a hundred users of one cold
  key are not refused because of each other.
* ``GUNICORN_THREADS - CACHE_MISS_SLOTS - CACHE_FOLLOWER_SLOTS`` threads are
  therefore always left for hits (start-up checks it is at least one).
* A request that finds no free slot is refused at once: HTTP 503
  ``overloaded`` with ``Retry-After`` (never a queue that holds a thread).

Why admission control rather than another worker model: it keeps the
thread-per-request model, costs two non-blocking semaphore operations per
miss and none per hit, and the refused requests get a fast, documented answer
instead of a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER_SECONDS = 1
KINDS = ("miss", "query", "follower")


class Overloaded(Exception):
    """No free slot of this kind in this worker."""


class Bulkhead:
    def __init__(self, miss_slots: int, query_slots: int, follower_slots: int) -> None:
        self.limits = {"miss": miss_slots, "query": query_slots, "follower": follower_slots}
        self._semaphores = {kind: threading.BoundedSemaphore(n) for kind, n in self.limits.items()}
        self._lock = threading.Lock()
        self.in_use = dict.fromkeys(KINDS, 0)

    @contextmanager
    def slot(self, kind: str) -> Iterator[None]:
        semaphore = self._semaphores[kind]
        if not semaphore.acquire(blocking=False):
            raise Overloaded(f"all {self.limits[kind]} {kind} slots of this worker are busy")
        with self._lock:
            self.in_use[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use[kind] -= 1
            semaphore.release()

    def miss(self):
        """A thread leading the fill of a cold key (querying, or waiting on a lease)."""
        return self.slot("miss")

    def query(self):
        """A thread running a query (inside a miss slot, or a bypass)."""
        return self.slot("query")

    def follower(self):
        """A thread waiting for a fill already in flight in this worker."""
        return self.slot("follower")
