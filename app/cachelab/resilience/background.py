"""Background jobs: a bounded pool per worker, one job per key at a time.

Rules
-----
* At most ``threads`` jobs run at once, and at most ``queued`` wait; a job
  beyond that bound is refused (:meth:`claim` says no) and counted: the
  caller keeps serving what it has, and the key is claimed again by a later
  request. Memory is bounded however many keys go stale together.
* A key has at most one job running or queued (:meth:`claim`).
* :meth:`defer` keeps a key from being claimed until a deadline (e.g. while
  another process holds its lease), and :meth:`forget` ends that early (the
  key changed).
* Shutdown drops the queued jobs (a stopping worker must not run them all) and
  lets the running ones finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

_MAX_DEFERRED = 10_000


class BackgroundJobs:
    def __init__(self, threads: int, queued: int, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.limit = threads + queued
        self.refused = 0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="refresh")
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._deferred: dict[str, float] = {}  # key -> monotonic time it may be claimed again
        self._closed = False

    def claim(self, key: str) -> bool:
        """True if the caller should submit a job for ``key`` (then it must)."""
        with self._lock:
            if self._closed or key in self._claimed:
                return False
            until = self._deferred.get(key)
            if until is not None:
                if self.clock() < until:
                    return False
                del self._deferred[key]
            if len(self._claimed) >= self.limit:
                self.refused += 1
                return False
            self._claimed.add(key)
            return True

    def submit(self, key: str, job: Callable[[], None]) -> None:
        try:
            self._executor.submit(self._run, key, job)
        except RuntimeError:  # shut down: the worker is exiting
            self._done(key)

    def _run(self, key: str, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self._done(key)

    def _done(self, key: str) -> None:
        with self._lock:
            self._claimed.discard(key)

    def defer(self, key: str, seconds: float) -> None:
        with self._lock:
            now = self.clock()
            if len(self._deferred) >= _MAX_DEFERRED:
                self._deferred = {k: t for k, t in self._deferred.items() if t > now}
                if len(self._deferred) >= _MAX_DEFERRED:
                    return  # all still deferred: the key may be claimed again, harmless
            self._deferred[key] = now + seconds

    def forget(self, keys: Iterable[str] | None) -> None:
        """The keys changed: whatever deferred them is over."""
        with self._lock:
            if keys is None:
                self._deferred.clear()
            else:
                for key in keys:
                    self._deferred.pop(key, None)

    def pending(self) -> int:
        """Jobs running or queued."""
        with self._lock:
            return len(self._claimed)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
