"""Server-assisted invalidation: one RESP3 ``CLIENT TRACKING`` connection per worker.

The listener connects with ``HELLO 3`` and ``CLIENT TRACKING ON BCAST PREFIX
<namespace>:v2:``: Redis (or Valkey) then pushes an ``invalidate`` message
for every key of the namespace that anyone changes -- a refresh, a fill by
another process, a purge, an expiry, an eviction -- and a flush message when
the data set is flushed. The listener removes those keys from this worker's
copies (:mod:`cachelab.engine.local`) and wakes the requests waiting on them.

Why our own connection rather than redis-py's ``cache_config``: redis-py's
client-side cache (8.x) refuses servers older than 7.4 (ElastiCache Redis OSS
7.1, the Redis 7.0 of the local lab), caches raw command replies rather than
the prepared response of an entry generation, and applies invalidations
lazily per pooled connection. One BCAST connection per worker costs one
connection, needs no tracking state per key, and also tells fill waiters the
moment a value lands.

Rules
-----
* Tier 1 is coherent only while the listener is connected: every
  (re)connection, disconnection or flush resets the copies
  (:meth:`LocalEntries.reset`); while it is not connected, tier 1 serves a
  copy for at most ``MEMORY_FALLBACK_TTL_MS``.
* A server that rejects ``HELLO 3`` or ``CLIENT TRACKING`` (e.g. ElastiCache
  Redis OSS 7.1, or an ACL without ``client|tracking``) puts the listener in
  ``fallback`` mode, reported by /readyz and the dashboard; it asks again
  every minute.
* A heartbeat (``ROLE``, or ``PING`` where ROLE is not allowed) every
  ``TRACKING_HEARTBEAT_SECONDS`` detects a dead connection, and a node that a
  failover turned into a replica; either way the listener reconnects. That
  heartbeat bounds how long a silently dead connection can leave tier 1 stale.
* Before tier 1 serves a copy, the request thread drains any invalidation
  already waiting on the socket (:meth:`sync`), so an invalidation that
  reached this host before the request is never ignored.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis

from .. import metrics
from .local import LocalEntries

log = logging.getLogger(__name__)

STARTING, TRACKING, FALLBACK, DOWN, OFF = "starting", "tracking", "fallback", "down", "off"
UNSUPPORTED_RECHECK_SECONDS = 60.0
_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Tracking:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        local: LocalEntries,
        heartbeat: float,
        enabled: bool = True,
        on_invalidate: Callable[[list[str] | None], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.local = local
        self.heartbeat = heartbeat
        self.on_invalidate = on_invalidate
        self.mode = STARTING if enabled else OFF
        self.reason = "" if enabled else "CACHE_TRACKING=off"
        self.invalidations = 0
        self.attempts = 0  # connection attempts (tests and the dashboard read it)
        self._conn: Any = None
        self._sock: Any = None
        self._io_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watchers: dict[str, set[threading.Event]] = {}
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._heartbeat_command: tuple[str, ...] = ("ROLE",)
        self._server_run_id: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.mode == TRACKING

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason or None,
            "invalidations": self.invalidations,
        }

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.mode == OFF or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="tracking", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._reconnect.set()

    def reconnect(self) -> None:
        """Reconnect soon (a failover moved the primary)."""
        self._reconnect.set()

    # -- the request path ----------------------------------------------------------
    def sync(self) -> None:
        """Apply invalidations already waiting on the socket before serving a copy."""
        sock = self._sock
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return
        if readable:
            with self._io_lock:
                try:
                    self._drain()
                except _CONNECTION_ERRORS as exc:
                    # Stop serving copies at once, and say so: until the listener has
                    # reconnected, /readyz and ``active`` must not claim tracking.
                    self._set_mode(DOWN, f"connection lost: {type(exc).__name__}")
                    self._reconnect.set()  # the listener notices and reconnects

    # -- waiting for a key -----------------------------------------------------------
    def watch(self, keys: Iterable[str]) -> threading.Event:
        event = threading.Event()
        with self._watch_lock:
            for key in keys:
                self._watchers.setdefault(key, set()).add(event)
        return event

    def unwatch(self, keys: Iterable[str], event: threading.Event) -> None:
        with self._watch_lock:
            for key in keys:
                waiting = self._watchers.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._watchers[key]

    def _wake(self, keys: list[str] | None) -> None:
        with self._watch_lock:
            if keys is None:
                events = {e for waiting in self._watchers.values() for e in waiting}
            else:
                events = {e for key in keys for e in self._watchers.get(key, ())}
        for event in events:
            event.set()

    # -- the listener thread ---------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            self._reconnect.clear()
            self.attempts += 1
            try:
                self._connect()
            except redis.exceptions.ResponseError as exc:
                self._set_mode(FALLBACK, f"server refused tracking: {str(exc)[:160]}")
                self._reconnect.wait(UNSUPPORTED_RECHECK_SECONDS)
                continue
            except _CONNECTION_ERRORS as exc:
                self._set_mode(DOWN, f"cannot connect: {type(exc).__name__}")
                self._reconnect.wait(backoff)
                backoff = min(backoff * 2, self.heartbeat)
                continue
            backoff = 0.05
            self._set_mode(TRACKING, "")
            try:
                self._listen()
            except _CONNECTION_ERRORS as exc:
                if not self._stop.is_set():
                    log.warning("tracking connection lost", extra={"reason": str(exc)[:200]})
                self._set_mode(DOWN, f"connection lost: {type(exc).__name__}")
            finally:
                self._disconnect()

    def _connect(self) -> None:
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
            conn._parser.set_invalidation_push_handler(self._on_push)
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix)
            conn.read_response()
            run_id = self._run_id(conn)
        except BaseException:
            conn.disconnect()
            raise
        if run_id is None or run_id == self._server_run_id:
            self.local.missed_deletions()  # the same server: copies may be out of date
        self._server_run_id = run_id
        with self._io_lock:
            self._conn, self._sock = conn, conn._sock

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

    def _disconnect(self) -> None:
        with self._io_lock:
            conn, self._conn, self._sock = self._conn, None, None
        if conn is not None:
            conn.disconnect()

    def _listen(self) -> None:
        while not self._stop.is_set() and not self._reconnect.is_set():
            readable, _, _ = select.select([self._sock], [], [], self.heartbeat)
            with self._io_lock:
                if readable:
                    self._drain()
                else:
                    self._beat()

    def _drain(self) -> None:
        """Read every complete push already received (caller holds the I/O lock)."""
        conn = self._conn
        if conn is None:
            return
        while conn.can_read(timeout=0):
            try:
                conn.read_response(push_request=True, timeout=0, disconnect_on_error=False)
            except redis.exceptions.TimeoutError:
                break  # a partial message: the rest comes with the next wake-up

    def _beat(self) -> None:
        """Heartbeat: the connection answers, and still to a primary."""
        conn = self._conn
        conn.send_command(*self._heartbeat_command)
        try:
            reply = conn.read_response()
        except redis.exceptions.ResponseError:
            self._heartbeat_command = ("PING",)  # ROLE not allowed here (ACL)
            return
        if self._heartbeat_command == ("ROLE",) and reply and _text(reply[0]) != "master":
            raise redis.exceptions.ConnectionError("tracking node is no longer a primary")

    def _on_push(self, push: list[Any]) -> list[Any]:
        keys = push[1] if len(push) > 1 else None
        if keys is None:  # FLUSHALL / FLUSHDB
            self.local.clear()
            self._wake(None)
            names = None
        else:
            names = [_text(key) for key in keys]
            self.local.invalidate(names)
            self._wake(names)
        self.invalidations += 1
        metrics.INVALIDATIONS.inc()
        if self.on_invalidate is not None:
            self.on_invalidate(names)
        return push

    def _set_mode(self, mode: str, reason: str) -> None:
        changed = mode != self.mode
        if not changed and mode != TRACKING:
            self.reason = reason  # another failed attempt: nothing new was missed
            return
        # Every change of connection state may have lost invalidations; the
        # copies are reset before the new mode is visible to requests.
        self.local.reset(tracking=mode == TRACKING)
        self.mode, self.reason = mode, reason
        self._wake(None)
        if changed:
            metrics.TRACKING_STATE.set(TRACKING_LEVEL[mode])
            log.info("tracking %s", mode, extra={"reason": reason or None})


TRACKING_LEVEL = {TRACKING: 0, STARTING: 1, FALLBACK: 2, OFF: 2, DOWN: 3}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
