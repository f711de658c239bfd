"""In-process single flight: concurrent callers for one key share one call.

The Redis lock collapses misses across processes and containers; this collapses
them across the threads of one gunicorn worker first, so a worker sends at most
one lock attempt, one wait loop or one database query per key at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[T]] = {}

    def do(self, key: str, func: Callable[[], T]) -> tuple[T, bool]:
        """Return ``(result, shared)``; ``shared`` is True for callers that waited.

        Exceptions of the leading call are raised in every caller; nothing is
        remembered after the call ends (errors are never cached).
        """
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if leader:
                future = self._calls[key] = Future()
        if not leader:
            return future.result(), True
        try:
            result = func()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result, False
        finally:
            with self._lock:
                del self._calls[key]
