"""The bulkhead between hits and misses (admission control per worker).

A gthread worker has ``GUNICORN_THREADS`` threads. A hit needs one for
microseconds; a miss holds one for the whole query (seconds), and so does
every request waiting for another's fill. Without a bound, a flood of cold
misses takes every thread and hits queue behind them.

Rules
-----
* At most ``miss_slots`` threads per worker are on the miss path (running a
  query, or waiting for one); ``GUNICORN_THREADS - miss_slots`` threads are
  therefore always left for hits.
* Of those, at most ``fill_slots`` run a query at once (each holds a database
  connection: ``DB_POOL_SIZE`` covers them plus the background refreshes).
* A request that finds no free slot is refused at once: HTTP 503
  ``overloaded`` with ``Retry-After`` (never a queue that holds a thread).

Per container the bounds are these times ``GUNICORN_WORKERS``.

Why admission control rather than another worker model: it keeps the
thread-per-request model every fault test was built on, costs two
non-blocking semaphore operations per miss and none per hit, and the refused
requests get a fast, documented answer instead of a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER_SECONDS = 1


class Overloaded(Exception):
    """No free slot on the miss path of this worker."""


class Admission:
    def __init__(self, miss_slots: int, fill_slots: int) -> None:
        self.miss_slots = miss_slots
        self.fill_slots = fill_slots
        self._misses = threading.BoundedSemaphore(miss_slots)
        self._fills = threading.BoundedSemaphore(fill_slots)
        self._lock = threading.Lock()
        self.in_use = {"miss": 0, "fill": 0}

    @contextmanager
    def _slot(self, semaphore: threading.BoundedSemaphore, kind: str) -> Iterator[None]:
        if not semaphore.acquire(blocking=False):
            raise Overloaded(f"all {kind} slots of this worker are busy")
        with self._lock:
            self.in_use[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use[kind] -= 1
            semaphore.release()

    def miss(self):
        """A thread on the miss path (filling or waiting for a fill)."""
        return self._slot(self._misses, "miss")

    def fill(self):
        """A thread running the slow query (inside a miss slot, or a bypass)."""
        return self._slot(self._fills, "fill")
