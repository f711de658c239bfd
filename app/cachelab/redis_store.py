"""The Redis side of the cache: JSON entries, single-flight locks, the breaker.

Every call a request makes goes through the per-process circuit breaker with
timeouts in the tens of milliseconds and no retries (redis-py 8 defaults to
5 s timeouts and 10 retries, which would add seconds to every request during
an outage). Failures surface as :class:`CacheUnavailable`, which callers turn
into a documented degradation, never an HTTP 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import LockError
from redis.retry import Retry

from . import metrics
from .breaker import STATE_LEVEL, BreakerOpen, CircuitBreaker
from .config import Settings
from .keys import parse_entry

T = TypeVar("T")
_REDIS_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class CacheUnavailable(Exception):
    """Redis did not answer in time, failed, or the breaker is open."""


def make_client(settings: Settings, timeout_ms: int | None = None) -> redis.Redis:
    """A client with a bounded blocking pool and explicit short timeouts."""
    socket_timeout = (timeout_ms or settings.redis_socket_timeout_ms) / 1000
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=socket_timeout,  # wait for a free pooled connection
        socket_timeout=socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
        socket_keepalive=True,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 0),
        client_name="cachelab",
    )
    return redis.Redis(connection_pool=pool)


class RedisStore:
    """Typed operations on the cache namespace, guarded by a circuit breaker."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.client = client or make_client(settings)
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_seconds,
            on_transition=_record_transition,
        )
        metrics.BREAKER_STATE.set(STATE_LEVEL[self.breaker.state])

    def _call(self, func: Callable[[], T]) -> T:
        try:
            return self.breaker.call(func, _REDIS_FAILURES)
        except BreakerOpen as exc:
            metrics.REDIS_ERRORS.labels("breaker_open").inc()
            raise CacheUnavailable(str(exc)) from exc
        except redis.exceptions.TimeoutError as exc:
            metrics.REDIS_ERRORS.labels("timeout").inc()
            raise CacheUnavailable("redis timeout") from exc
        except _REDIS_FAILURES as exc:
            metrics.REDIS_ERRORS.labels("connection").inc()
            raise CacheUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
        except redis.exceptions.ReadOnlyError as exc:
            # A failover demoted the node this pool talks to: drop every pooled
            # connection so the next ones resolve the primary endpoint again.
            metrics.REDIS_ERRORS.labels("readonly").inc()
            self.client.connection_pool.disconnect()
            raise CacheUnavailable("redis is read-only (failover): reconnecting") from exc
        except redis.exceptions.RedisError as exc:  # OOM, NOPERM, WRONGTYPE, ...
            metrics.REDIS_ERRORS.labels("response").inc()
            raise CacheUnavailable(f"redis error: {str(exc)[:120]}") from exc

    def get_entry(self, key: str) -> dict[str, Any] | None:
        """The cache entry under ``key`` (see :func:`keys.parse_entry`)."""
        return parse_entry(self._call(lambda: self.client.get(key)))

    def set_json(self, key: str, value: dict[str, Any], ttl_ms: int) -> None:
        payload = json.dumps(value, separators=(",", ":"))
        self._call(lambda: self.client.set(key, payload, px=max(ttl_ms, 1)))

    def lock(self, key: str, ttl_seconds: float) -> redis.lock.Lock:
        """A SET NX PX lock with a random token, released only by its owner (Lua)."""
        return self.client.lock(key, timeout=ttl_seconds, blocking=False, thread_local=False)

    def acquire(self, lock: redis.lock.Lock) -> bool:
        return self._call(lock.acquire)

    def release(self, lock: redis.lock.Lock) -> None:
        """Release if still ours; a lock that expired or a Redis outage is not an error."""
        try:
            self._call(lock.release)
        except (LockError, CacheUnavailable):
            pass

    def exists(self, key: str) -> bool:
        return bool(self._call(lambda: self.client.exists(key)))

    def ping(self) -> None:
        """Readiness probe; bypasses the breaker so it can see Redis come back."""
        try:
            self.client.ping()
        except _REDIS_FAILURES as exc:
            raise CacheUnavailable(f"redis unavailable: {type(exc).__name__}") from exc


def _record_transition(old: str, new: str) -> None:
    metrics.BREAKER_TRANSITIONS.labels(old, new).inc()
    metrics.BREAKER_STATE.set(STATE_LEVEL[new])
