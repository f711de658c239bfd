"""In-process single flight: concurrent callers for one key share one call.

The cache's lease collapses misses across processes and containers; this
collapses them across the threads of one worker first, so a worker sends at
most one lease attempt, one wait or one query per key at a time.

Rules
-----
* The first caller (the leader) runs ``func``; the others (followers) wait for
  its result at most ``timeout`` seconds, then get :class:`FlightTimeout`
  (never an unbounded wait).
* The leader runs inside ``leading()`` and each follower waits inside
  ``following()``: the caller's admission control (a bulkhead) decides how
  many of each a worker takes. A leader refused there fails its flight, and
  its followers get the same exception.
* The leader's exception is raised in every caller. Nothing is remembered after
  the call ends: errors are never cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, TypeVar

T = TypeVar("T")
Admit = Callable[[], AbstractContextManager[object]]


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

    def in_flight(self, key: str) -> bool:
        """True if a call for ``key`` is running (a caller would follow it)."""
        with self._lock:
            return key in self._calls

    def do(
        self,
        key: str,
        func: Callable[[], T],
        timeout: float,
        leading: Admit = nullcontext,
        following: Admit = nullcontext,
    ) -> tuple[T, bool]:
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
                with following():
                    return future.result(timeout=timeout), True
            except FutureTimeout:
                raise FlightTimeout(f"waited {timeout:g}s for a fill in this worker") from None
            finally:
                with self._lock:
                    left = self._followers.pop(key, 1) - 1
                    if left:
                        self._followers[key] = left
        try:
            with leading():
                result = func()
        except BaseException as exc:
            with self._lock:
                del self._calls[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._calls[key]
        future.set_result(result)
        return result, False
