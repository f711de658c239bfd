"""Redis, as the engine uses it: entries, guarded writes, leases and fences.

Every call goes through a circuit breaker with timeouts in the tens of
milliseconds and no retries (redis-py 8 defaults to 5 s timeouts and 10
retries, which would add seconds to every request during an outage). Every
failure surfaces as :class:`CacheUnavailable`, which the read path turns into
a documented degradation, never an HTTP 500:

* connection errors and timeouts count against the breaker;
* ``READONLY`` (the node was demoted by a failover) drops the one connection
  that got it, when it returns to the pool -- never a connection another
  thread is using -- so the next connection resolves the primary endpoint
  again; the tracking listener finds the demotion with its own heartbeat;
* other error replies (OOM, NOPERM, WRONGTYPE, ...) and anything unexpected
  from the client degrade that one call.

Every key of one entry shares a hash tag (:mod:`cachelab.engine.keys`), so each
Lua script touches one slot and runs unchanged on a Redis Cluster
(:mod:`cachelab.engine.cluster` runs this store on one, with a breaker per node):

* a guarded write compares ``(version, fence)`` with the stored entry
  (:mod:`cachelab.engine.model`);
* a lease is ``SET lease token NX PX`` plus a fence from the key's own fence
  key: ``max(last + 1, server time in microseconds)``. Seeding from the
  server's clock keeps fences growing when the fence key expired, was evicted,
  or Redis lost its data; the fence key lives ``fence_ttl_ms`` after its last
  use, so fences never pile up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import metrics
from ..config import Settings
from ..resilience.breaker import STATE_LEVEL, BreakerOpen, CircuitBreaker
from .model import NO_VERSION, Entry, decode, tombstone

T = TypeVar("T")
_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_PATIENT_CONNECTIONS = 16

# KEYS[1] entry; ARGV: payload, px, version (-1: none), fence, kind.
# Returns 1 if written, 0 if the stored entry is as new or newer.
_GUARDED_WRITE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and old.f == 3 then
    local ov = tonumber(old.version) or -1
    local of = tonumber(old.fence) or 0
    local nv = tonumber(ARGV[3])
    local nf = tonumber(ARGV[4])
    if old.kind == 'tombstone' then
      if nv < ov then return 0 end
    elseif ARGV[5] == 'tombstone' then
      if ov >= nv then return 0 end
    elseif nv < ov or (nv == ov and nf <= of) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[n] the fence key; ARGV[n] its TTL in ms. max(last + 1, now in us).
_FENCE = """
local function fence(key, px)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', key) or '0') or 0
  local f = math.max(last + 1, now)
  redis.call('SET', key, string.format('%.0f', f), 'PX', px)
  return f
end
"""
# KEYS[1] fence; ARGV[1] fence TTL.
_NEXT_FENCE = _FENCE + "return fence(KEYS[1], ARGV[1])"
# A lease is "<token> <expiry, server ms>" with NO Redis TTL: under volatile-lru
# (the lab's and ElastiCache's default policy) only keys with a TTL are evicted,
# so memory pressure can never hand one fill's lease to a second holder. Its
# life is the expiry inside it, renewed by its holder; a lapsed lease is free.
# A dead holder leaves a few bytes behind until the entry is filled again.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS[1] lease, KEYS[2] fence; ARGV: token, lease ms, fence px.
# Returns the fence (> 0) if acquired, else -(milliseconds the lease still lives).
_ACQUIRE = (
    _FENCE
    + _NOW_MS
    + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local expiry = tonumber(string.match(cur, ' (%d+)$')) or 0
  if expiry > now then return -(expiry - now) end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%.0f', now + tonumber(ARGV[2])))
return fence(KEYS[2], ARGV[3])
"""
)
# Returns 1 renewed, 0 refused (the lease lapsed, is gone or someone else's).
_EXTEND = (
    _NOW_MS
    + """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local token, expiry = string.match(cur, '^(%S+) (%d+)$')
if token ~= ARGV[1] or tonumber(expiry) <= now then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%.0f', now + tonumber(ARGV[2])))
return 1
"""
)
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%S+) ') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class CacheUnavailable(Exception):
    """Redis did not answer in time, failed, or the breaker is open."""


class Script:
    """A Lua script, run by its SHA. A server that does not know it yet (a new
    primary after a failover, a restarted node) gets its text once (``EVAL``
    caches it there), on the node that owns the key only: redis-py's own
    fallback loads it on every primary, which fails while any one is down."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


GUARDED_WRITE = Script(_GUARDED_WRITE)
ACQUIRE = Script(_ACQUIRE)
NEXT_FENCE = Script(_NEXT_FENCE)
EXTEND = Script(_EXTEND)
RELEASE = Script(_RELEASE)


@dataclass(frozen=True)
class Read:
    """One key as Redis has it: an entry of any kind, or nothing (``entry`` None)."""

    entry: Entry | None
    pttl_ms: int

    @property
    def soft_remaining(self) -> float:
        assert self.entry is not None
        return self.entry.soft_remaining(self.pttl_ms)


NOTHING = Read(None, -2)


class _DemotionAware:
    """A connection that asks to be dropped after a ``READONLY`` reply: the pool
    disconnects it when it is released, in the thread that used it, so no other
    thread's connection is ever closed under it."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ReadOnlyError:
            self.mark_for_reconnect()  # type: ignore[attr-defined]
            raise


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
    base = pool.connection_class
    pool.connection_class = type(f"DemotionAware{base.__name__}", (_DemotionAware, base), {})
    return redis.Redis(connection_pool=pool)


class RedisStore:
    """Typed operations on the cache namespace, guarded by a circuit breaker."""

    # What counts against the breaker: the server is unreachable or too slow.
    failures: tuple[type[BaseException], ...] = _FAILURES

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client or make_client(settings)
        # A second, small pool with a longer timeout and no breaker, for calls that
        # would rather wait than give up: the last try of a read that has no other
        # answer than the database (read_patiently), a cold key's fill (its lease
        # and its renewals, its reads while waiting, its entry: the alternative is
        # a second slow query), and a write's cache action after its commit (read-your-writes
        # depends on it; a PUT may take 500 ms).
        pool = self.client.connection_pool
        self.patient = redis.Redis(
            connection_pool=redis.BlockingConnectionPool(
                connection_class=pool.connection_class,
                max_connections=_PATIENT_CONNECTIONS,
                timeout=settings.redis_retry_timeout_ms / 1000,
                **{
                    **pool.connection_kwargs,
                    "socket_timeout": settings.redis_retry_timeout_ms / 1000,
                },
            )
        )
        self.fence_ttl_ms = settings.fence_ttl_ms
        self.breaker = breaker or CircuitBreaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_seconds,
            on_transition=_record_transition,
        )
        metrics.BREAKER_STATE.set(STATE_LEVEL[self.breaker.state])

    def _breaker_for(self, key: str) -> CircuitBreaker:
        """The breaker guarding calls on ``key`` (one per worker on a single node)."""
        return self.breaker

    def _patient_client(self, key: str) -> Any:
        """The client of patient calls on ``key`` (one small pool on a single node)."""
        return self.patient

    def _call_patiently(self, func: Callable[[Any], T], key: str) -> T:
        """Run ``func`` past the breaker with ``REDIS_RETRY_TIMEOUT_MS``."""
        return func(self._patient_client(key))

    def _call(self, func: Callable[[Any], T], key: str, patient: bool = False) -> T:
        """Run ``func(client)``: through ``key``'s breaker with the short timeouts,
        or (``patient``) past the breaker on the patient pool."""
        if patient:
            try:
                return self._call_patiently(func, key)
            except Exception as exc:
                metrics.REDIS_ERRORS["patient"].inc()
                raise CacheUnavailable(f"redis unavailable: {_describe(exc)}") from exc
        try:
            with self._breaker_for(key).guard(self.failures):
                return func(self.client)
        except CacheUnavailable:
            raise  # already decided (a cluster not reachable yet)
        except BreakerOpen as exc:
            metrics.REDIS_ERRORS["breaker_open"].inc()
            raise CacheUnavailable(str(exc)) from exc
        except redis.exceptions.TimeoutError as exc:
            metrics.REDIS_ERRORS["timeout"].inc()
            raise CacheUnavailable("redis timeout") from exc
        except _FAILURES as exc:
            metrics.REDIS_ERRORS["connection"].inc()
            raise CacheUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
        except self.failures as exc:  # a cluster's own failures (cachelab.engine.cluster)
            metrics.REDIS_ERRORS["cluster"].inc()
            raise CacheUnavailable(f"redis cluster: {_describe(exc)}") from exc
        except redis.exceptions.ReadOnlyError as exc:
            metrics.REDIS_ERRORS["readonly"].inc()
            raise CacheUnavailable("redis is read-only (failover): reconnecting") from exc
        except redis.exceptions.RedisError as exc:  # OOM, NOPERM, WRONGTYPE, ...
            metrics.REDIS_ERRORS["response"].inc()
            raise CacheUnavailable(f"redis error: {str(exc)[:120]}") from exc
        except Exception as exc:  # a client defect must degrade one call, not become a 500
            metrics.REDIS_ERRORS["unexpected"].inc()
            raise CacheUnavailable(f"redis client error: {type(exc).__name__}") from exc

    # -- entries --------------------------------------------------------------
    def read(self, key: str) -> Read:
        """The entry under ``key`` and its PTTL, in one round trip."""

        return self._read(key, patient=False)

    def read_patiently(self, key: str) -> Read:
        """:meth:`read` once more, past an open breaker, with ``REDIS_RETRY_TIMEOUT_MS``:
        for a request whose only other answer is the slow query (no copy in this
        worker). A Redis that is merely slow (a saturated machine) still answers
        it; a dead one costs it at most that timeout before the query."""
        return self._read(key, patient=True)

    def _read(self, key: str, patient: bool) -> Read:
        def get(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            return pipe.execute()

        raw, pttl = self._call(get, key, patient)
        entry = decode(raw)
        if entry is None or pttl is None or pttl < 0:
            return NOTHING
        return Read(entry, pttl)

    def write(
        self, key: str, entry: Entry, px: int, guarded: bool = True, patient: bool = False
    ) -> bool:
        """Store ``entry`` for ``px`` ms; guarded: only if newer than what is stored."""
        payload = entry.encode()
        px = max(1, px)
        if not guarded:
            self._call(lambda c: c.set(key, payload, px=px), key, patient)
            return True
        version = NO_VERSION if entry.version is None else entry.version
        args: list[bytes | str | int] = [payload, px, version, entry.fence, entry.kind]
        return bool(self._call(lambda c: GUARDED_WRITE(c, [key], args), key, patient))

    def restore(self, key: str, entry: Entry, px: int) -> bool:
        """Write a worker's copy back only where Redis has nothing (after it lost
        its data): whatever is there, older or newer, wins."""
        payload = entry.encode()
        return bool(self._call(lambda c: c.set(key, payload, px=max(1, px), nx=True), key))

    def delete(self, *keys: str, patient: bool = False) -> int:
        """UNLINK entries' keys (guarded by the first key's breaker)."""
        return int(self._call(lambda c: c.unlink(*keys), keys[0], patient))

    def next_fence(self, fence_key: str, patient: bool = False) -> int:
        args = [self.fence_ttl_ms]
        return int(self._call(lambda c: NEXT_FENCE(c, [fence_key], args), fence_key, patient))

    def bury(self, key: str, fence_key: str, version: int, created: float, px: int) -> bool:
        """A tombstone carrying ``version`` over ``key``, with the key's next
        fence, patiently (a write's cache action, or a fill's retraction):
        every fill of an older version is refused while it lives. False if
        Redis holds something newer still."""
        fence = self.next_fence(fence_key, patient=True)
        return self.write(key, tombstone(version, fence, created), px, patient=True)

    def settle(self, key: str) -> None:
        """One more round trip to ``key``'s server, after a write's cache action
        and before the write answers (read-your-writes across workers). The
        server hands a write's reply and the tracking invalidations it caused
        to their sockets in the same pass of its event loop, in no promised
        order: the writer's reply can go first, and the server can be
        descheduled before the rest. A command it answers afterwards was read
        after that pass ended, so its answer proves every invalidation is on
        the other workers' sockets, where their next read applies it (tier
        1's first rule). Patient; a failure changes nothing but the proof."""
        try:
            self._call(lambda c: c.pttl(key), key, patient=True)
        except CacheUnavailable:
            pass

    # -- leases -----------------------------------------------------------------
    def acquire(
        self, lease_key: str, fence_key: str, token: str, px: int, patient: bool = False
    ) -> int:
        """The fence (> 0) if the lease is now ours, else -(ms it still lives)."""
        args: list[str | int] = [token, px, self.fence_ttl_ms]
        keys = [lease_key, fence_key]
        return int(self._call(lambda c: ACQUIRE(c, keys, args), lease_key, patient))

    def extend(self, lease_key: str, token: str, px: int, patient: bool = False) -> bool:
        """True if renewed; False if refused (gone, or someone else's).
        Raises :class:`CacheUnavailable` when Redis cannot tell."""
        args = [token, px]
        return bool(self._call(lambda c: EXTEND(c, [lease_key], args), lease_key, patient))

    def release(self, lease_key: str, token: str) -> None:
        """Release if still ours; an expired lease or an outage is not an error
        (the lease ends by itself)."""
        try:
            self._call(lambda c: RELEASE(c, [lease_key], [token]), lease_key)
        except CacheUnavailable:
            pass

    # -- operators: purge, key table, probes -----------------------------------------
    # Operators' tools (purge, the dashboard's key table and INFO) bypass the
    # breaker and use the patient pool: on a saturated machine they would rather
    # wait REDIS_RETRY_TIMEOUT_MS than report a cache that is only slow as down.
    def scan(self, pattern: str, count: int = 500) -> Iterator[bytes]:
        """Every key matching ``pattern``."""
        yield from self.patient.scan_iter(match=pattern, count=count)

    def purge(self, pattern: str) -> int:
        """UNLINK every key matching ``pattern``; returns how many were deleted."""
        deleted = 0
        batch: list[bytes] = []
        for key in self.scan(pattern):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(self.patient.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.patient.unlink(*batch))
        return deleted

    def peek(self, keys: Sequence[str]) -> list[tuple[bytes | None, int, bytes | None]]:
        """Each key's raw entry, PTTL and raw lease, in one round trip (the
        dashboard's key table)."""
        return peek_entries(self.patient, keys) if keys else []

    def info(self) -> dict[str, Any]:
        return dict(self.patient.info())

    def breaker_state(self) -> str:
        """The breaker's state (the worst node's, on a cluster)."""
        return self.breaker.state

    def topology_status(self) -> dict[str, Any]:
        """What /readyz shows of the topology (nothing for a single node)."""
        return {}

    def start(self) -> None:
        """Background work of the store (a cluster's shard map); none on one node."""

    def close(self) -> None:
        """Stop what :meth:`start` started."""

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


def peek_entries(client: Any, keys: Sequence[str]) -> list[tuple[bytes | None, int, bytes | None]]:
    """GET, PTTL and the lease of each key in one pipeline; a key that fails
    (moved meanwhile, on a cluster) reads as missing."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
        pipe.get(f"{key}:lease")
    replies = pipe.execute(raise_on_error=False)
    out = []
    for i in range(len(keys)):
        raw, pttl, lease = replies[3 * i : 3 * i + 3]
        if isinstance(raw, Exception) or isinstance(pttl, Exception):
            raw, pttl, lease = None, -2, None
        out.append((raw, int(pttl), None if isinstance(lease, Exception) else lease))
    return out
