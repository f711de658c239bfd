"""A per-process circuit breaker for the Redis client.

Why not pybreaker: its ``CircuitBreaker.call`` holds one lock for the whole
call, which would serialise every Redis command of a gthread worker. Here the
lock only guards the state change; the call itself runs unlocked.

Rules
-----
* ``closed``: calls pass; ``failure_threshold`` consecutive failures open it.
* ``open``: calls fail at once (no request waits on Redis) until ``cooldown``
  has passed; then it is ``half-open``.
* ``half-open``: exactly one call, the probe, is let through; its success
  closes the breaker, its failure opens it for another cool-down.
* **Only the probe closes an open breaker.** A call admitted while the breaker
  was closed that succeeds after it opened says nothing about Redis now (it
  may have been a lucky one among timeouts): it is ignored, so the breaker
  keeps its cool-down instead of flapping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"
STATE_LEVEL = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class BreakerOpen(Exception):
    """Raised instead of calling the protected service while the breaker is open."""


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        cooldown: float,
        on_transition: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._on_transition = on_transition
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown:
                return HALF_OPEN
            return self._state

    @contextmanager
    def guard(self, failures: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Run the ``with`` body unless the breaker is open (:class:`BreakerOpen`);
        an exception among ``failures`` counts against it."""
        probe = self._admit()
        try:
            yield
        except failures:
            self._record_failure(probe)
            raise
        except BaseException:
            if probe:  # not a verdict on Redis: let the next call probe
                with self._lock:
                    self._probe_in_flight = False
            raise
        self._record_success(probe)

    def _admit(self) -> bool:
        """Decide whether a call may go through; True if it is the half-open probe."""
        with self._lock:
            if self._state == CLOSED:
                return False
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.cooldown:
                    raise BreakerOpen("redis circuit breaker is open")
                self._transition(HALF_OPEN)
            if self._probe_in_flight:
                raise BreakerOpen("redis circuit breaker is half-open; probe in flight")
            self._probe_in_flight = True
            return True

    def _record_failure(self, probe: bool) -> None:
        with self._lock:
            if probe:
                self._probe_in_flight = False
            if self._state != CLOSED and not probe:
                return  # a straggler from before the breaker opened: no verdict
            self._failures += 1
            if probe or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                if self._state != OPEN:
                    self._transition(OPEN)

    def _record_success(self, probe: bool) -> None:
        with self._lock:
            if probe:
                self._probe_in_flight = False
                self._failures = 0
                self._transition(CLOSED)
            elif self._state == CLOSED:
                self._failures = 0

    def _transition(self, new_state: str) -> None:
        old, self._state = self._state, new_state
        if old != new_state and self._on_transition is not None:
            self._on_transition(old, new_state)
