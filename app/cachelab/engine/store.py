"""The Redis side of the cache: entries, guarded writes, leases, the breaker.

Every call a request makes goes through the per-process circuit breaker with
timeouts in the tens of milliseconds and no retries (redis-py 8 defaults to
5 s timeouts and 10 retries, which would add seconds to every request during
an outage). Every failure surfaces as :class:`CacheUnavailable`, which
callers turn into a documented degradation, never an HTTP 500:

* connection errors and timeouts count against the breaker;
* ``READONLY`` (what a client gets after a failover demoted the node it talks
  to) drops every pooled connection, so the next ones resolve the primary
  endpoint again, and tells the tracking listener to reconnect;
* other error replies (OOM, NOPERM, WRONGTYPE, ...) degrade that one call.

The Lua scripts make each compound step atomic: a guarded write compares
``(version, fence)`` with the stored entry (see :mod:`cachelab.engine.entry`), and a
lease is ``SET NX PX`` plus a fencing token from one counter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import metrics
from ..config import Settings
from .breaker import STATE_LEVEL, BreakerOpen, CircuitBreaker
from .entry import Entry, decode

T = TypeVar("T")
_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# KEYS[1] entry; ARGV: payload, px, version (-1: none), fence, is_tombstone (0/1).
# Returns 1 if written, 0 if the stored entry is as new or newer.
_GUARDED_WRITE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and old.f == 2 then
    local ov = tonumber(old.version) or -1
    local of = tonumber(old.fence) or 0
    local nv = tonumber(ARGV[3])
    local nf = tonumber(ARGV[4])
    if old.tombstone == true then
      if nv < ov then return 0 end
    elseif ARGV[5] == '1' then
      if ov >= nv then return 0 end
    elseif nv < ov or (nv == ov and nf <= of) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# The fence counter is seeded from the server's clock (microseconds) when it
# is missing, so fences keep growing after Redis lost its data in a restart.
_FENCE = """
local function fence(key)
  if redis.call('EXISTS', key) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', key, string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
  return redis.call('INCR', key)
end
"""
# KEYS[1] fence counter.
_NEXT_FENCE = _FENCE + "return fence(KEYS[1])"
# KEYS[1] lock, KEYS[2] fence counter; ARGV: token, px.
# Returns the fence (> 0) if acquired, else -(milliseconds the lock still lives).
_ACQUIRE = (
    _FENCE
    + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return fence(KEYS[2])
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return -left
"""
)
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class CacheUnavailable(Exception):
    """Redis did not answer in time, failed, or the breaker is open."""


@dataclass(frozen=True)
class Read:
    """One key as Redis has it: a live entry, a tombstone, or nothing."""

    entry: Entry | None
    tombstone: Entry | None
    pttl_ms: int

    @property
    def soft_remaining(self) -> float:
        assert self.entry is not None
        return self.entry.soft_remaining(self.pttl_ms)


def make_client(
    settings: Settings, timeout_ms: int | None = None, max_connections: int | None = None
) -> redis.Redis:
    """A client with a bounded blocking pool and explicit short timeouts."""
    socket_timeout = (timeout_ms or settings.redis_socket_timeout_ms) / 1000
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_max_connections,
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

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        on_failover: Callable[[], None] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client or make_client(settings)
        self.fence_key = f"{settings.cache_namespace}:fence:v2"
        self.on_failover = on_failover
        self.breaker = breaker or CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_seconds,
            on_transition=_record_transition,
        )
        metrics.BREAKER_STATE.set(STATE_LEVEL[self.breaker.state])
        self._guarded_write = self.client.register_script(_GUARDED_WRITE)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._next_fence = self.client.register_script(_NEXT_FENCE)
        self._extend = self.client.register_script(_EXTEND)
        self._release = self.client.register_script(_RELEASE)

    def _call(self, func: Callable[[], T]) -> T:
        try:
            return self.breaker.call(func, _FAILURES)
        except BreakerOpen as exc:
            metrics.REDIS_ERRORS["breaker_open"].inc()
            raise CacheUnavailable(str(exc)) from exc
        except redis.exceptions.TimeoutError as exc:
            metrics.REDIS_ERRORS["timeout"].inc()
            raise CacheUnavailable("redis timeout") from exc
        except _FAILURES as exc:
            metrics.REDIS_ERRORS["connection"].inc()
            raise CacheUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
        except redis.exceptions.ReadOnlyError as exc:
            # A failover demoted the node this pool talks to: drop every pooled
            # connection so the next ones resolve the primary endpoint again.
            metrics.REDIS_ERRORS["readonly"].inc()
            self.client.connection_pool.disconnect()
            if self.on_failover is not None:
                self.on_failover()
            raise CacheUnavailable("redis is read-only (failover): reconnecting") from exc
        except redis.exceptions.RedisError as exc:  # OOM, NOPERM, WRONGTYPE, ...
            metrics.REDIS_ERRORS["response"].inc()
            raise CacheUnavailable(f"redis error: {str(exc)[:120]}") from exc

    # -- entries --------------------------------------------------------------
    def read(self, key: str) -> Read:
        """The entry under ``key`` and its PTTL, in one round trip."""

        def get() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            return pipe.execute()

        raw, pttl = self._call(get)
        entry = decode(raw)
        if entry is None or pttl is None or pttl < 0:
            return Read(None, None, -2)
        if entry.tombstone:
            return Read(None, entry, pttl)
        return Read(entry, None, pttl)

    def write(self, key: str, entry: Entry, px: int, guarded: bool = True) -> bool:
        """Store ``entry`` for ``px`` ms; guarded: only if newer than what is stored."""
        payload = entry.encode()
        px = max(1, px)
        if not guarded:
            self._call(lambda: self.client.set(key, payload, px=px))
            return True
        version = -1 if entry.version is None else entry.version
        return bool(
            self._call(
                lambda: self._guarded_write(
                    keys=[key], args=[payload, px, version, entry.fence, int(entry.tombstone)]
                )
            )
        )

    def delete(self, *keys: str) -> int:
        return int(self._call(lambda: self.client.unlink(*keys)))

    def next_fence(self) -> int:
        return int(self._call(lambda: self._next_fence(keys=[self.fence_key])))

    def restore(self, key: str, entry: Entry, px: int) -> bool:
        """Write a worker's copy back only where Redis has nothing (after it lost
        its data): whatever is there, older or newer, wins."""
        payload = entry.encode()
        return bool(self._call(lambda: self.client.set(key, payload, px=max(1, px), nx=True)))

    # -- leases (the fill lock) -------------------------------------------------
    def acquire(self, lock_key: str, token: str, px: int) -> int:
        """The fence (> 0) if the lock is now ours, else -(ms it still lives)."""
        return int(
            self._call(lambda: self._acquire(keys=[lock_key, self.fence_key], args=[token, px]))
        )

    def extend(self, lock_key: str, token: str, px: int) -> bool:
        return bool(self._call(lambda: self._extend(keys=[lock_key], args=[token, px])))

    def release(self, lock_key: str, token: str) -> None:
        """Release if still ours; an expired lock or an outage is not an error
        (the lease ends by itself)."""
        try:
            self._call(lambda: self._release(keys=[lock_key], args=[token]))
        except CacheUnavailable:
            pass

    # -- probes ---------------------------------------------------------------------
    def ping(self) -> None:
        """Readiness probe; bypasses the breaker so it can see Redis come back."""
        try:
            self.client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis unavailable: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _record_transition(old: str, new: str) -> None:
    metrics.BREAKER_TRANSITIONS.labels(old, new).inc()
    metrics.BREAKER_STATE.set(STATE_LEVEL[new])
