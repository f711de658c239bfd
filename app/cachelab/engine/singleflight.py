"""In-process single flight: concurrent callers for one key share one call.

The Redis lock collapses misses across processes and containers; this collapses
them across the threads of one gunicorn worker first, so a worker sends at most
one lock attempt, one wait or one database query per key at a time.

Rules: the first caller (the leader) runs ``func``; the others wait for its
result at most ``timeout`` seconds, then get :class:`FlightTimeout` (never an
unbounded wait). The leader's exception is raised in every caller. Nothing is
remembered after the call ends: errors are never cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")


class FlightTimeout(Exception):
    """A follower waited longer than its deadline for the leader's result."""


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[T]] = {}
        self._followers: dict[str, int] = {}

    def followers(self, key: str) -> int:
        """How many callers are waiting on the call in flight for ``key``."""
        with self._lock:
            return self._followers.get(key, 0)

    def is_leader_free(self, key: str) -> bool:
        """True if no call for ``key`` is in flight (a caller would lead)."""
        with self._lock:
            return key not in self._calls

    def do(self, key: str, func: Callable[[], T], timeout: float) -> tuple[T, bool]:
        """Return ``(result, shared)``; ``shared`` is True for callers that waited."""
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = self._calls[key] = Future()
            else:
                self._followers[key] = self._followers.get(key, 0) + 1
        if not leader:
            try:
                return future.result(timeout=timeout), True
            except FutureTimeout:
                raise FlightTimeout(f"waited {timeout:g}s for a fill in this worker") from None
            finally:
                with self._lock:
                    left = self._followers.pop(key, 1) - 1
                    if left:
                        self._followers[key] = left
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
