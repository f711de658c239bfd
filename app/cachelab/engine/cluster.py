"""Redis Cluster (``REDIS_CLUSTER=on``): the client, the shard map, and the store on them.

The engine's keys are cluster-ready (:mod:`cachelab.engine.keys`: every key of
one entry shares a hash tag, so each Lua script touches one slot). This module
runs the same store on a cluster -- a Valkey or Redis Cluster, or ElastiCache
with cluster mode enabled (``REDIS_URL`` names any node, or the configuration
endpoint).

Rules
-----
* **One client for the cluster**: redis-py's ``RedisCluster``, with the single
  node's short timeouts and no retries, and a bounded blocking pool per node
  (``REDIS_MAX_CONNECTIONS`` each). It follows ``MOVED`` (patching its slot map,
  and re-reading the whole map every fifth time) and ``ASK``; a lost node makes
  it re-read the map too. A cluster that cannot be reached at start-up does not
  stop the app: the client is built at the first call that finds it (at most
  once per ``BREAKER_COOLDOWN_SECONDS``), and the requests meanwhile degrade.
* **A breaker per node.** A call is routed by its key's slot and guarded by the
  breaker of the primary that owns that slot now. A shard that loses every node
  opens its own breaker only: its keys degrade (the worker's copy or the
  database) while the other shards' keys stay cached. ``CLUSTERDOWN``, a slot
  no node serves and endless redirections count against the breaker like a
  timeout. While a node's breaker is not closed, calls ask for the shard map to
  be re-read: a failover there is found without waiting for a call to fail.
* **Patient calls** (a cold key's lease, renewals, waits and store; a write's
  cache action after its commit; the last try of a read: see
  :class:`cachelab.engine.store.RedisStore`) go past the breaker, with
  ``REDIS_RETRY_TIMEOUT_MS``, on a small pool of their own per primary (the
  one that owns the key's slot now). A ``MOVED`` is followed once on the new
  owner's patient pool; an ``ASK`` (the slot is migrating) or a second
  redirection is left to the cluster client, past the breaker with its short
  timeouts.
* **The shard map** (:class:`ShardMap`: nodes, roles, slot ranges, from
  ``CLUSTER SHARDS``) is re-read every ``CLUSTER_REFRESH_SECONDS``, and soon
  (at most once a second) when the client followed a redirection or lost a
  node. A change is handed to the subscribers, and treated like a lost
  tracking connection for the keys it touches: a failover or a node that joined
  or left re-reads the client's own map, tracking follows the nodes
  (:class:`cachelab.engine.tracking.ClusterTracking`) and tier 1 starts a new
  epoch; slots that moved between known nodes invalidate the copies of their
  keys only (a long reshard would otherwise empty tier 1 every second).
* **Operators' tools** -- purge, the dashboard's key table, ``INFO``, readiness
  -- go over every primary; a primary that does not answer is named.
* ``REDIS_CLUSTER`` must match the server: :func:`check_mode` stops start-up
  when ``REDIS_URL`` names a cluster node with ``off``, or a lone server with
  ``on``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from .. import metrics
from ..config import ConfigError, Settings
from ..resilience.breaker import STATE_LEVEL, CircuitBreaker
from .model import decode
from .store import NOTHING, CacheUnavailable, Read, RedisStore, Script, _describe, peek_entries

log = logging.getLogger(__name__)
T = TypeVar("T")

_PATIENT_CONNECTIONS = 16
_REFRESH_MIN_SECONDS = 1.0  # the shard map is re-read at most this often on demand
_PURGE_BATCH = 500
# GET and PTTL in one command: on a cluster a pipeline that fails is retried
# command by command (one timeout each), a script is one command. ``no-writes``
# lets it run while a manual failover pauses the primary's writes.
_READ = Script(
    "#!lua flags=no-writes\nreturn {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"
)


# -- start-up ---------------------------------------------------------------------------
def check_mode(settings: Settings, timeout: float = 2.0) -> str | None:
    """Stop start-up when ``REDIS_CLUSTER`` does not match the server at
    ``REDIS_URL``; returns the server's mode ("cluster" or "standalone"), or
    None when it could not be asked (the app then starts degraded)."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )
    try:
        enabled = str(client.info("cluster").get("cluster_enabled", 0)) == "1"
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("cannot ask the cache server its mode", extra={"reason": _describe(exc)})
        return None
    finally:
        client.close()
    where = _where(settings.redis_url)
    if enabled and not settings.redis_cluster:
        raise ConfigError(
            f"REDIS_CLUSTER is off but REDIS_URL ({where}) is a Redis Cluster node: "
            "set REDIS_CLUSTER=on (or point REDIS_URL at a server without cluster mode)"
        )
    if settings.redis_cluster and not enabled:
        raise ConfigError(
            f"REDIS_CLUSTER is on but REDIS_URL ({where}) is not a cluster node "
            "(cluster_enabled:0): set REDIS_CLUSTER=off, or point REDIS_URL at a cluster node "
            "or ElastiCache's configuration endpoint"
        )
    return "cluster" if enabled else "standalone"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def make_cluster_client(settings: Settings, timeout_ms: int | None = None) -> RedisCluster:
    """A cluster client with the single node's timeouts and no retries, and a
    bounded blocking pool per node. Raises when no node answers."""
    socket_timeout = (timeout_ms or settings.redis_socket_timeout_ms) / 1000
    return RedisCluster.from_url(
        settings.redis_url,
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=False,
        # A MOVED patches that one slot; the whole map is re-read by the shard map
        # (a failover, a node joining) -- not every fifth MOVED, which during a
        # reshard re-read it (and dropped a node's idle connections) several
        # times a second.
        reinitialize_steps=0,
        connection_pool_class=redis.BlockingConnectionPool,
        max_connections=settings.redis_max_connections,
        timeout=socket_timeout,  # wait for a free pooled connection
        socket_timeout=socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
        socket_keepalive=True,
        client_name="cachelab",
        # Redis 8's slot-migration notices: nothing a Valkey or ElastiCache sends.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


# -- the shard map ----------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One node as clients reach it (``host:port``, the name redis-py uses)."""

    name: str
    role: str  # "primary" or "replica"
    shard: str
    health: str  # "online", "loading", "fail", ...


@dataclass(frozen=True)
class Topology:
    nodes: tuple[Node, ...]
    slots: tuple[tuple[int, int, str], ...]  # (first, last, primary's name)

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """What a change of is a topology change: who is primary, who holds which slots."""
        return (tuple(sorted((n.name, n.role) for n in self.nodes)), self.slots)

    @property
    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "primary"]

    def slots_of(self, name: str) -> int:
        return sum(last - first + 1 for first, last, owner in self.slots if owner == name)

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """Who is in the cluster, and as what: a change is a failover or a node
        that joined or left."""
        return tuple(sorted((n.name, n.role) for n in self.nodes))

    def owners(self) -> dict[int, str]:
        return {slot: owner for first, last, owner in self.slots for slot in range(first, last + 1)}

    def moved_since(self, old: Topology) -> frozenset[int]:
        """The slots whose owner is not the same as in ``old``."""
        before, now = old.owners(), self.owners()
        return frozenset(s for s in before.keys() | now.keys() if before.get(s) != now.get(s))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_dict(value: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat list of pairs, with text keys."""
    if isinstance(value, dict):
        return {_text(k): v for k, v in value.items()}
    return {_text(value[i]): value[i + 1] for i in range(0, len(value) - 1, 2)}


def parse_shards(reply: Any, tls: bool = False) -> Topology:
    """``CLUSTER SHARDS`` (Redis and Valkey >= 7) as a :class:`Topology`."""
    nodes: list[Node] = []
    slots: list[tuple[int, int, str]] = []
    for raw_shard in reply:
        shard = _as_dict(raw_shard)
        members = [_as_dict(member) for member in shard.get("nodes", [])]
        shard_id = _text(shard.get("id", "")) or ",".join(
            sorted(_text(m.get("id", "")) for m in members)
        )
        primary = ""
        for member in members:
            endpoint = _text(member.get("endpoint", "")) or "?"
            if endpoint == "?":
                endpoint = _text(member.get("ip", ""))
            port = member.get("tls-port") if tls and member.get("tls-port") else member.get("port")
            name = f"{endpoint}:{int(port or 0)}"
            role = "primary" if _text(member.get("role", "")) == "master" else "replica"
            nodes.append(Node(name, role, shard_id, _text(member.get("health", ""))))
            if role == "primary":
                primary = name
        ranges = list(shard.get("slots", []))
        for i in range(0, len(ranges) - 1, 2):
            slots.append((int(ranges[i]), int(ranges[i + 1]), primary))
    return Topology(tuple(sorted(nodes, key=lambda n: n.name)), tuple(sorted(slots)))


class ShardMap:
    """The cluster's shard map as this worker knows it, re-read periodically and
    on demand; subscribers hear every change (see the module's rules)."""

    def __init__(
        self,
        read: Callable[[], Topology],
        interval: float,
        on_members_change: Callable[[], None] | None = None,
    ) -> None:
        self._read = read
        self.interval = interval
        # A failover or a node joining or leaving: the client re-reads its own map
        # (slots that merely moved it patches itself, one MOVED at a time).
        self._on_members_change = on_members_change
        self.current: Topology | None = None
        self.changes = 0
        self._subscribers: list[Callable[[Topology | None, Topology], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_read = 0.0
        self._thread: threading.Thread | None = None

    def subscribe(self, hook: Callable[[Topology | None, Topology], None]) -> None:
        """Call ``hook(old, new)`` after every change (and ``hook(None, current)``
        now, if the map is known)."""
        self._subscribers.append(hook)
        if self.current is not None:
            hook(None, self.current)

    def request_refresh(self) -> None:
        """Re-read soon (a redirection, a lost node)."""
        self._wake.set()

    def refresh(self) -> bool:
        """Re-read now; True if the map changed. Raises what the read raises."""
        with self._lock:
            self._last_read = time.monotonic()
            topology = self._read()
            old = self.current
            if old is not None and old.fingerprint == topology.fingerprint:
                self.current = topology  # health and the like may differ
                return False
            self.current = topology
            if old is not None:
                self.changes += 1
                metrics.CLUSTER_TOPOLOGY_CHANGES.inc()
                log.info(
                    "cluster topology changed",
                    extra={
                        "primaries": [n.name for n in topology.primaries],
                        "nodes": len(topology.nodes),
                    },
                )
                if self._on_members_change is not None and old.members != topology.members:
                    self._on_members_change()
        for hook in self._subscribers:
            hook(old, topology)
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shard-map", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                wait = self.interval
            except Exception as exc:  # no node answered: try again soon
                log.warning("cannot read the cluster's shard map", extra={"reason": _describe(exc)})
                wait = min(self.interval, 1.0)
            self._wake.wait(wait)
            self._wake.clear()
            # Requests come in bursts (every thread that saw a redirection): one read.
            rest = self._last_read + _REFRESH_MIN_SECONDS - time.monotonic()
            if rest > 0 and not self._stop.is_set():
                self._stop.wait(rest)


# -- breakers ---------------------------------------------------------------------------
class NodeBreakers:
    """One circuit breaker per node, made on first use. ``state`` is the worst."""

    def __init__(self, failure_threshold: int, cooldown: float) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, node: str) -> CircuitBreaker:
        breaker = self._breakers.get(node)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(node)
                if breaker is None:
                    breaker = CircuitBreaker(
                        self.failure_threshold, self.cooldown, on_transition=self._transition
                    )
                    self._breakers[node] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        return {node: breaker.state for node, breaker in sorted(self._breakers.items())}

    @property
    def state(self) -> str:
        states = self.states().values()
        return max(states, key=STATE_LEVEL.__getitem__, default="closed")

    def _transition(self, old: str, new: str) -> None:
        metrics.BREAKER_TRANSITIONS.labels(old, new).inc()
        # The gauge shows the worst node (the transition's lock is held: compute
        # from the others and the new state).
        others = [b._state for b in list(self._breakers.values())]
        metrics.BREAKER_STATE.set(max([STATE_LEVEL[new], *(STATE_LEVEL[s] for s in others)]))


# -- the store ----------------------------------------------------------------------------
class ClusterStore(RedisStore):
    """:class:`RedisStore` on a Redis Cluster (see the module's rules)."""

    failures = RedisStore.failures + (
        redis.exceptions.ClusterDownError,
        redis.exceptions.SlotNotCoveredError,
        redis.exceptions.ClusterError,  # redirections past the client's limit
    )

    def __init__(
        self,
        settings: Settings,
        client: RedisCluster | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        self.settings = settings
        self.fence_ttl_ms = settings.fence_ttl_ms
        self.tls = urlsplit(settings.redis_url).scheme == "rediss"
        self._timeout_ms = timeout_ms
        self.breakers = NodeBreakers(
            settings.breaker_failure_threshold, settings.breaker_cooldown_seconds
        )
        metrics.BREAKER_STATE.set(0)
        self._client: RedisCluster | None = None
        self._connect_lock = threading.Lock()
        self._next_connect = 0.0
        self._patient: dict[str, redis.Redis] = {}
        self.shard_map = ShardMap(self._read_topology, settings.cluster_refresh_seconds)
        if client is not None:
            self._adopt(client)
        else:
            try:
                self._connect()
            except CacheUnavailable as exc:
                log.warning("redis cluster not reachable yet", extra={"reason": str(exc)})

    # -- the client ----------------------------------------------------------------------
    @property
    def client(self) -> Any:  # RedisCluster (typed loosely: RedisStore's calls are shared)
        client = self._client
        return client if client is not None else self._connect()

    @client.setter
    def client(self, client: Any) -> None:
        self._adopt(client)

    def _connect(self) -> RedisCluster:
        with self._connect_lock:
            if self._client is not None:
                return self._client
            now = time.monotonic()
            if now < self._next_connect:
                raise CacheUnavailable("redis cluster not reachable (waiting to retry)")
            self._next_connect = now + self.settings.breaker_cooldown_seconds
            try:
                client = make_cluster_client(self.settings, self._timeout_ms)
            # RedisClusterException ("cannot be connected") is no RedisError.
            except (
                redis.exceptions.RedisError,
                redis.exceptions.RedisClusterException,
                OSError,
            ) as exc:
                metrics.REDIS_ERRORS["connection"].inc()
                raise CacheUnavailable(f"redis cluster not reachable: {_describe(exc)}") from exc
            self._adopt(client)
            return client

    def _adopt(self, client: RedisCluster) -> None:
        """Use ``client``, and hear whenever it re-reads or patches its map."""
        manager = client.nodes_manager
        for name in ("initialize", "move_slot"):
            original = getattr(manager, name)

            def heard(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.shard_map.request_refresh()

            setattr(manager, name, heard)
        self.shard_map._on_members_change = manager.initialize
        self._client = client

    def _breaker_for(self, key: str) -> CircuitBreaker:
        breaker = self.breakers.get(self.client.get_node_from_key(key).name)
        if breaker.state != "closed":
            # Calls stop reaching that node, so the client would not learn of a
            # failover there: re-read the map (at most every 0.2 s).
            self.shard_map.request_refresh()
        return breaker

    def _read_topology(self) -> Topology:
        """``CLUSTER SHARDS`` from the first node that answers."""
        client = self.client
        last: BaseException | None = None
        for node in list(client.nodes_manager.nodes_cache.values()):
            if node.redis_connection is None:
                continue
            try:
                return parse_shards(
                    node.redis_connection.execute_command("CLUSTER SHARDS"), self.tls
                )
            except (redis.exceptions.RedisError, OSError) as exc:
                last = exc
        raise CacheUnavailable(f"no cluster node answered CLUSTER SHARDS: {last!r}")

    def breaker_state(self) -> str:
        return self.breakers.state

    def start(self) -> None:
        self.shard_map.start()

    def close(self) -> None:
        self.shard_map.close()

    # -- entries -------------------------------------------------------------------------
    def _read(self, key: str, patient: bool) -> Read:
        raw, pttl = self._call(lambda c: _READ(c, [key], []), key, patient)
        return _read(raw, pttl)

    def _patient_client(self, key: str) -> Any:
        """The patient pool of the primary that owns ``key`` now (one per node,
        made on first use)."""
        return self._patient_for(self.client.get_node_from_key(key).name)

    def _patient_for(self, name: str) -> redis.Redis:
        patient = self._patient.get(name)
        if patient is None:
            host, _, port = name.rpartition(":")
            patient = self._patient.setdefault(
                name,
                self._node_client(
                    host, int(port), self.settings.redis_retry_timeout_ms, _PATIENT_CONNECTIONS
                ),
            )
        return patient

    def _call_patiently(self, func: Callable[[Any], T], key: str) -> T:
        """As on one node, on the primary that owns the key. A ``MOVED`` (the
        slot moved, or a failover this worker has not heard of yet) is followed
        once, patiently; an ``ASK`` (the slot is migrating), or a second
        redirection, is left to the cluster client, which follows both (sending
        ``ASKING`` first) -- past the breaker, with its short timeouts."""
        client = self._patient_client(key)
        try:
            return func(client)
        except redis.exceptions.MovedError as exc:
            self.shard_map.request_refresh()
            client = self._patient_for(f"{exc.host}:{exc.port}")
        except redis.exceptions.AskError:
            return func(self.client)
        try:
            return func(client)
        except redis.exceptions.AskError:  # a MOVED too (a subclass)
            return func(self.client)

    def _node_client(
        self, host: str, port: int, timeout_ms: int, max_connections: int
    ) -> redis.Redis:
        """A plain client on one node, with the cluster client's connection settings."""
        kwargs = dict(self.client.nodes_manager.connection_kwargs)
        for name in ("connection_pool_class", "max_connections", "timeout", "redis_connect_func"):
            kwargs.pop(name, None)
        kwargs.pop("maint_notifications_config", None)
        kwargs.update(host=host, port=port, socket_timeout=timeout_ms / 1000)
        pool = redis.BlockingConnectionPool(
            max_connections=max_connections, timeout=timeout_ms / 1000, **kwargs
        )
        return redis.Redis(connection_pool=pool)

    def node_client(self, name: str) -> redis.Redis:
        """A client for one node (host:port), e.g. for its tracking connection."""
        host, _, port = name.rpartition(":")
        return self._node_client(
            host, int(port), self.settings.redis_socket_timeout_ms, max_connections=2
        )

    # -- operators: every primary --------------------------------------------------------
    def _primaries(self) -> list[Any]:
        return list(self.client.get_primaries())

    def scan(self, pattern: str, count: int = 500) -> Iterator[bytes]:
        """Every key matching ``pattern`` on every primary (a primary that does
        not answer raises: the key table says so, a purge fails)."""
        for node in self._primaries():
            yield from self._patient_for(node.name).scan_iter(match=pattern, count=count)

    def purge(self, pattern: str) -> int:
        """UNLINK every key matching ``pattern`` on every primary, one command
        per slot (a command may not span slots)."""
        deleted = 0
        for node in self._primaries():
            batch: list[bytes] = []
            for key in self._patient_for(node.name).scan_iter(match=pattern, count=_PURGE_BATCH):
                batch.append(key)
                if len(batch) >= _PURGE_BATCH:
                    deleted += self._unlink(node.name, batch)
                    batch = []
            if batch:
                deleted += self._unlink(node.name, batch)
        return deleted

    def _unlink(self, node: str, keys: Sequence[bytes]) -> int:
        """On the node the keys were scanned from; a slot that moved meanwhile
        is left to the cluster client, which follows the redirection."""
        by_slot: dict[int, list[bytes]] = {}
        for key in keys:
            by_slot.setdefault(self.client.keyslot(key), []).append(key)
        deleted = 0
        for group in by_slot.values():
            try:
                deleted += int(self._patient_for(node).unlink(*group))
            except (redis.exceptions.MovedError, redis.exceptions.AskError):
                deleted += int(self.client.unlink(*group))
        return deleted

    def info(self) -> dict[str, Any]:
        """INFO of every primary: counters summed, one row per node under ``nodes``."""
        summed: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        topology = self.shard_map.current
        for node in self._primaries():
            info = dict(self._patient_for(node.name).info())
            for name, value in info.items():
                total = summed.get(name, 0)
                if _number(value) and _number(total):  # a field may parse as a number on
                    summed[name] = total + value  # one node and as text on another
                else:
                    summed.setdefault(name, value)
            rows.append(
                {
                    "node": node.name,
                    "used_memory": info.get("used_memory"),
                    "keys": sum(
                        v.get("keys", 0)
                        for k, v in info.items()
                        if k.startswith("db") and isinstance(v, dict)
                    ),
                    "slots": topology.slots_of(node.name) if topology else None,
                    "breaker": self.breakers.get(node.name).state,
                }
            )
        summed["nodes"] = rows
        return summed

    def ping(self) -> None:
        """Every primary answers, or :class:`CacheUnavailable` names those that did not."""
        try:
            primaries = self._primaries()
        except CacheUnavailable:
            raise
        except (redis.exceptions.RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis cluster unavailable: {_describe(exc)}") from exc
        down = []
        for node in primaries:
            try:
                node.redis_connection.ping()
            except (redis.exceptions.RedisError, OSError) as exc:
                down.append(f"{node.name} ({_describe(exc)})")
        if down:
            raise CacheUnavailable(
                f"{len(down)} of {len(primaries)} primaries unreachable: {', '.join(down)}"
            )

    def peek(self, keys: Sequence[str]) -> list[tuple[bytes | None, int, bytes | None]]:
        """As on one node, grouped by the node that owns each key."""
        found: dict[str, tuple[bytes | None, int, bytes | None]] = {}
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for key in keys:
            node = self.client.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(key)
        for node, group in by_node.values():
            replies = peek_entries(self._patient_for(node.name), group)
            for key, reply in zip(group, replies, strict=True):
                found[key] = reply
        return [found[key] for key in keys]

    def topology_status(self) -> dict[str, Any]:
        """The shard map and each node's breaker, for /readyz and the dashboard."""
        topology = self.shard_map.current
        states = self.breakers.states()
        if topology is None:
            return {"cluster": {"nodes": [], "changes": self.shard_map.changes}}
        return {
            "cluster": {
                "changes": self.shard_map.changes,
                "nodes": [
                    {
                        "node": node.name,
                        "role": node.role,
                        "health": node.health,
                        "slots": topology.slots_of(node.name),
                        "breaker": states.get(node.name, "closed"),
                    }
                    for node in topology.nodes
                ],
            }
        }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read(raw: Any, pttl: Any) -> Read:
    entry = decode(raw)
    if entry is None or pttl is None or pttl < 0:
        return NOTHING
    return Read(entry, int(pttl))
