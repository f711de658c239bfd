"""Background refreshes: a bounded pool per worker, one refresh per key at a time.

Rules
-----
* A worker runs at most ``CACHE_REFRESH_THREADS`` refreshes at once (each
  holds a database connection); more stale keys wait their turn, served
  stale meanwhile.
* A key is refreshed by at most one task of this worker (:meth:`claim`).
* When another process holds the key's lease, the worker remembers it until
  that lease could end or the key changes (an invalidation), instead of
  retrying on every stale read.
* Shutdown drops the queued refreshes (a stopping worker must not run them
  all) and lets the running ones finish within the graceful timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

_MAX_REMEMBERED = 10_000


class Refresher:
    def __init__(self, threads: int, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="refresh")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._elsewhere: dict[str, float] = {}  # key -> monotonic time its lease may end
        self._closed = False

    def claim(self, key: str) -> bool:
        """True if the caller should refresh ``key`` (then :meth:`done` must follow)."""
        with self._lock:
            if self._closed or key in self._running:
                return False
            until = self._elsewhere.get(key)
            if until is not None:
                if self.clock() < until:
                    return False
                del self._elsewhere[key]
            self._running.add(key)
            return True

    def submit(self, key: str, task: Callable[[], None]) -> None:
        try:
            self._executor.submit(self._run, key, task)
        except RuntimeError:  # shut down: the worker is exiting
            self.done(key)

    def _run(self, key: str, task: Callable[[], None]) -> None:
        try:
            task()
        finally:
            self.done(key)

    def done(self, key: str) -> None:
        with self._lock:
            self._running.discard(key)

    def busy_elsewhere(self, key: str, seconds: float) -> None:
        with self._lock:
            now = self.clock()
            if len(self._elsewhere) >= _MAX_REMEMBERED:
                self._elsewhere = {k: t for k, t in self._elsewhere.items() if t > now}
            self._elsewhere[key] = now + seconds

    def forget(self, keys: Iterable[str] | None) -> None:
        """The keys changed (an invalidation): whatever ran elsewhere is over."""
        with self._lock:
            if keys is None:
                self._elsewhere.clear()
            else:
                for key in keys:
                    self._elsewhere.pop(key, None)

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
