"""In-process single flight: concurrent callers for one key share one call.

The cache's lease collapses misses across processes and containers; this
collapses them across the threads of one worker first, so a worker sends at
most one lease attempt, one wait or one query per key at a time.

Rules
-----
* :meth:`SingleFlight.join` makes the first caller of a key the *leader* of
  its flight; later callers are *followers* of the same flight.
* The leader does the work and ends the flight with :meth:`Flight.resolve` or
  :meth:`Flight.fail` -- exactly once, whatever happens (use ``try``). The
  key is free for a new flight from that moment.
* A follower waits for the leader's result at most ``timeout`` seconds
  (:meth:`Flight.wait`), then gets :class:`FlightTimeout` (never an unbounded
  wait). The leader's exception is raised in every follower. Nothing is
  remembered after a flight ends: errors are never cached.
* The caller does the work itself: nothing here calls back into it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")


class FlightTimeout(Exception):
    """A follower waited longer than its deadline for the leader's result."""


class Flight(Generic[T]):
    def __init__(self, flights: SingleFlight[T], key: str, future: Future[T], leader: bool):
        self._flights = flights
        self.key = key
        self._future = future
        self.leader = leader

    def resolve(self, value: T) -> None:
        self._flights._end(self.key, self._future)
        self._future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self._flights._end(self.key, self._future)
        self._future.set_exception(exc)

    def wait(self, timeout: float) -> T:
        self._flights._count(self.key, +1)
        try:
            return self._future.result(timeout=timeout)
        except FutureTimeout:
            raise FlightTimeout(f"waited {timeout:g}s for a fill in this worker") from None
        finally:
            self._flights._count(self.key, -1)


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[T]] = {}
        self._followers: dict[str, int] = {}

    def join(self, key: str) -> Flight[T]:
        with self._lock:
            future = self._calls.get(key)
            if future is None:
                future = self._calls[key] = Future()
                return Flight(self, key, future, leader=True)
        return Flight(self, key, future, leader=False)

    def followers(self, key: str) -> int:
        """How many callers are waiting on the flight of ``key``."""
        with self._lock:
            return self._followers.get(key, 0)

    def in_flight(self, key: str) -> bool:
        """True if a flight for ``key`` is running (a caller would follow it)."""
        with self._lock:
            return key in self._calls

    def _end(self, key: str, future: Future[T]) -> None:
        with self._lock:
            if self._calls.get(key) is future:
                del self._calls[key]

    def _count(self, key: str, delta: int) -> None:
        with self._lock:
            left = self._followers.get(key, 0) + delta
            if left > 0:
                self._followers[key] = left
            else:
                self._followers.pop(key, None)
