"""The tracking listeners: one RESP3 ``CLIENT TRACKING`` connection per worker,
or on a cluster one per node.

The listener connects with ``HELLO 3`` and ``CLIENT TRACKING ON BCAST PREFIX
<namespace>:v3:``: Redis (or Valkey) then pushes an ``invalidate`` message for
every key of the namespace that anyone changes -- a refresh, a fill by another
process, a purge, an expiry, an eviction -- and a flush message when the data
set is flushed. The connection is attached to tier 1
(:mod:`cachelab.engine.tier1`), which applies those messages and owns the
rule of when a copy may be served; this module owns the connection's life.

Why our own connection rather than redis-py's ``cache_config``: redis-py's
client-side cache (8.x) refuses servers older than 7.4 and servers that do not
call themselves "redis" (Valkey, ElastiCache Valkey), caches raw command
replies rather than the prepared response of an entry generation, and applies
invalidations lazily per pooled connection.

Rules
-----
* Every (re)attachment is a new epoch for tier 1: nothing read before it is
  served from memory. Re-attaching to the *same* server (same ``run_id``)
  also ends write-backs: it may have deleted keys while nobody listened.
* A server that rejects ``HELLO 3`` or ``CLIENT TRACKING`` (e.g. ElastiCache
  Redis OSS 7.1, or an ACL without ``client|tracking``) puts the listener in
  ``fallback`` mode, reported by /readyz and the dashboard; it asks again
  every minute.
* A heartbeat (``ROLE``, or ``PING`` where ROLE is not allowed) goes out every
  third of ``TRACKING_HEARTBEAT_SECONDS``; an unanswered one, a lost
  connection, or a node a failover turned into a replica makes the listener
  reconnect (with back-off), and tier 1 stops serving at once.

On a cluster (:class:`ClusterTracking`)
---------------------------------------
``CLIENT TRACKING`` is per connection and per node: a node pushes the
invalidations of the keys *it* changes. So each worker keeps one listener per
node of the shard map (:mod:`cachelab.engine.cluster`), attached to one tier 1
and drained by the same rule; tier 1 is covered only while every one of them
is attached and answering.

* **Primaries and replicas.** A primary's writes reach its replicas, which push
  the same invalidations; and a replica is the next primary. A replica promoted
  by a failover already has our connection, so the first write it accepts is
  heard like any other -- there is no window while the listener learns who the
  new primary is. (A replica's connection answers ``PING``: ``ROLE`` would say
  "replica", which is no fault here.)
* **The shard map decides the set.** A node that joins gets a listener; one
  that leaves loses it; any change of the map is a new tier-1 epoch (the
  simplest rule that is right for every key a change touches).
* **Down is down.** While any node's listener is not tracking (a node down or
  paused), tier 1 serves no copy; requests read Redis, whose other shards still
  answer.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import redis

from .. import metrics
from .tier1 import CONNECTION_ERRORS, Link, Tier1

log = logging.getLogger(__name__)

STARTING, TRACKING, FALLBACK, DOWN, OFF = "starting", "tracking", "fallback", "down", "off"
TRACKING_LEVEL = {TRACKING: 0, STARTING: 1, FALLBACK: 2, OFF: 2, DOWN: 3}
UNSUPPORTED_RECHECK_SECONDS = 60.0


def _report(mode: str) -> None:
    metrics.TRACKING_STATE.set(TRACKING_LEVEL[mode])


class TrackingListener:
    """One tracking connection's life: connect, attach, listen, reconnect."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        tier1: Tier1,
        heartbeat: float,
        enabled: bool = True,
        node: str = "",
        heartbeat_command: tuple[str, ...] = ("ROLE",),
        on_mode: Callable[[str], None] = _report,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.tier1 = tier1
        self.heartbeat = heartbeat
        self.node = node  # a cluster node ("" on a single node)
        self.heartbeat_command = heartbeat_command
        self._on_mode = on_mode
        self.mode = STARTING if enabled else OFF
        self.reason = "" if enabled else "CACHE_TRACKING=off"
        self.attempts = 0  # connection attempts (tests and the dashboard read it)
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._server_run_id: str | None = None
        self._thread: threading.Thread | None = None
        if not node:  # on a cluster, ClusterTracking tells tier 1 what it needs
            tier1.expect(1 if enabled else 0)

    @property
    def active(self) -> bool:
        """Tier 1 is covered by invalidations right now."""
        return self.mode == TRACKING and self.tier1.covered()

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason or None,
            "invalidations": self.tier1.invalidations,
        }

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.mode == OFF or self._thread is not None:
            return
        name = f"tracking {self.node}" if self.node else "tracking"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._reconnect.set()

    def reconnect(self) -> None:
        """Reconnect soon (e.g. a failover moved the primary)."""
        self._reconnect.set()

    # -- the listener thread -----------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            self._reconnect.clear()
            self.attempts += 1
            try:
                conn, same_server = self._connect()
            except redis.exceptions.ResponseError as exc:
                self._set_mode(FALLBACK, f"server refused tracking: {str(exc)[:160]}")
                self._reconnect.wait(UNSUPPORTED_RECHECK_SECONDS)
                continue
            except CONNECTION_ERRORS as exc:
                self._set_mode(DOWN, f"cannot connect: {type(exc).__name__}")
                self._reconnect.wait(backoff)
                backoff = min(backoff * 2, self.heartbeat)
                continue
            backoff = 0.05
            link = self.tier1.attach(conn, self.heartbeat_command, same_server, self.node)
            self._set_mode(TRACKING, "")
            try:
                reason = self._listen(link)
            except CONNECTION_ERRORS as exc:
                reason = f"connection lost: {type(exc).__name__}"
            finally:
                self.tier1.detach(link)
                conn.disconnect()
            if not self._stop.is_set():
                log.warning(
                    "tracking connection lost",
                    extra={"reason": reason[:200], "node": self.node or None},
                )
                self._set_mode(DOWN, reason)

    def _connect(self) -> tuple[Any, bool]:
        pool = self.client.connection_pool
        kwargs = {
            **pool.connection_kwargs,
            "protocol": 3,
            "client_name": "cachelab-tracking",
            "socket_timeout": max(pool.connection_kwargs.get("socket_timeout") or 1.0, 1.0),
        }
        conn = pool.connection_class(**kwargs)
        try:
            conn.connect()
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix)
            conn.read_response()
            run_id = self._run_id(conn)
        except BaseException:
            conn.disconnect()
            raise
        same_server = run_id is None or run_id == self._server_run_id
        self._server_run_id = run_id
        return conn, same_server

    @staticmethod
    def _run_id(conn: Any) -> str | None:
        """The server process' id: it changes when Redis restarts (and lost its data)."""
        try:
            conn.send_command("INFO", "server")
            info = _text(conn.read_response())
        except redis.exceptions.ResponseError:
            return None
        for line in info.splitlines():
            if line.startswith("run_id:"):
                return line.split(":", 1)[1].strip()
        return None

    def _listen(self, link: Link) -> str:
        """Drain and heartbeat until the connection breaks; returns why it ended."""
        wait = self.heartbeat / 3
        while not self._stop.is_set() and not self._reconnect.is_set():
            readable, _, _ = select.select([link.sock], [], [], wait)
            if readable:
                self.tier1.drain(link)
            else:
                self.tier1.heartbeat_due(link)
            if link.broken:
                return link.broken
        return "stopped" if self._stop.is_set() else "reconnect requested"

    def _set_mode(self, mode: str, reason: str) -> None:
        changed = mode != self.mode
        self.mode, self.reason = mode, reason
        if changed:
            self._on_mode(mode)
            log.info(
                "tracking %s", mode, extra={"reason": reason or None, "node": self.node or None}
            )


class ClusterTracking:
    """One :class:`TrackingListener` per node of a cluster's shard map, all
    attached to one tier 1 (see "On a cluster" above)."""

    def __init__(
        self,
        node_client: Callable[[str], redis.Redis],
        prefix: str,
        tier1: Tier1,
        heartbeat: float,
        enabled: bool = True,
    ) -> None:
        self.node_client = node_client
        self.prefix = prefix
        self.tier1 = tier1
        self.heartbeat = heartbeat
        self.enabled = enabled
        self.listeners: dict[str, TrackingListener] = {}
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._nodes: frozenset[str] = frozenset()
        if enabled:
            tier1.expect_nodes(frozenset())  # nothing is covered until the map is known
        else:
            tier1.expect(0)

    @property
    def mode(self) -> str:
        if not self.enabled:
            return OFF
        modes = [listener.mode for listener in list(self.listeners.values())]
        if not modes:
            return STARTING
        return max(modes, key=TRACKING_LEVEL.__getitem__)

    @property
    def active(self) -> bool:
        return self.mode == TRACKING and self.tier1.covered()

    @property
    def attempts(self) -> int:
        return sum(listener.attempts for listener in list(self.listeners.values()))

    def status(self) -> dict[str, Any]:
        listeners = dict(self.listeners)
        reasons = [f"{node}: {lst.reason}" for node, lst in sorted(listeners.items()) if lst.reason]
        return {
            "mode": self.mode,
            "reason": "; ".join(reasons) or (None if self.enabled else "CACHE_TRACKING=off"),
            "invalidations": self.tier1.invalidations,
            "nodes": {node: lst.mode for node, lst in sorted(listeners.items())},
        }

    def start(self) -> None:
        """Listen to the nodes the shard map names (now, and after each change)."""
        with self._lock:
            self._started = True
            nodes = self._nodes
        self._reconcile(nodes)

    def on_topology(self, nodes: frozenset[str]) -> None:
        """The shard map changed (or is first known): these are the nodes."""
        with self._lock:
            self._nodes = nodes
            started = self._started
        if started:
            self._reconcile(nodes)

    def _reconcile(self, nodes: frozenset[str]) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._closed:
                return
            self.tier1.expect_nodes(nodes)  # before anything attaches or leaves
            for node in set(self.listeners) - nodes:
                self.listeners.pop(node).close()
            for node in sorted(nodes - set(self.listeners)):
                listener = TrackingListener(
                    self.node_client(node),
                    self.prefix,
                    self.tier1,
                    self.heartbeat,
                    node=node,
                    heartbeat_command=("PING",),
                    on_mode=self._report,
                )
                self.listeners[node] = listener
                listener.start()
        self._report(self.mode)

    def _report(self, _mode: str) -> None:
        metrics.TRACKING_STATE.set(TRACKING_LEVEL[self.mode])

    def reconnect(self) -> None:
        for listener in list(self.listeners.values()):
            listener.reconnect()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listeners = list(self.listeners.values())
        for listener in listeners:
            listener.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
