"""The cache server of a Compose stack: its CLI, and on a Valkey Cluster its nodes.

:class:`CacheNodes` is a part of :class:`loadtest.stack.Stack` (it inherits
it): the engine's own CLI inside the cache container, flushing every primary,
and for the cluster (compose.cluster.yaml) the nodes as ``CLUSTER NODES``
names them by service, a plain client on one node's published port, and the
primary that owns a key -- what the drills, the cluster suites and the
benchmarks' cluster topology need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ClusterNode:
    service: str  # the Compose service (cache-1 ... cache-6)
    id: str
    role: str  # primary | replica
    primary_id: str | None
    ranges: tuple[tuple[int, int], ...]  # the slots it serves (first, last)
    failed: bool

    @property
    def slots(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


class CacheNodes:
    """Needs the stack's ``files``, ``container(service)`` and ``port(service, port)``."""

    files: list[Path]

    def container(self, service: str) -> Any:
        raise NotImplementedError

    def port(self, service: str, container_port: int) -> str:
        raise NotImplementedError

    @property
    def cluster(self) -> bool:
        """The cache is a Valkey Cluster (compose.cluster.yaml)."""
        return any(path.name == "compose.cluster.yaml" for path in self.files)

    def redis_cli(self, *args: str, node: str | None = None) -> str:
        """The engine's own CLI (valkey-cli or redis-cli) inside the cache container
        (on a cluster: in ``node``, a service name, by default cache-1)."""
        script = (
            'if command -v valkey-cli >/dev/null; then exec valkey-cli "$@"; fi; '
            'exec redis-cli "$@"'
        )
        service = node or ("cache-1" if self.cluster else "redis")
        code, out = self.container(service).exec_run(["sh", "-c", script, "cli", *args])
        if code != 0:
            raise RuntimeError(f"redis-cli {args} on {service} failed: {out!r}")
        return out.decode().strip()

    def cluster_nodes(self, via: str | None = None) -> list[ClusterNode]:
        """The cluster as one node sees it (``CLUSTER NODES``), by service name."""
        nodes = []
        for line in self.redis_cli("CLUSTER", "NODES", node=via).splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            address = parts[1]
            service = address.split(",", 1)[1] if "," in address else address.split(":", 1)[0]
            flags = set(parts[2].split(","))
            ranges = []
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated or imported
                first, _, last = spec.partition("-")
                ranges.append((int(first), int(last or first)))
            nodes.append(
                ClusterNode(
                    service,
                    parts[0],
                    "primary" if "master" in flags else "replica",
                    parts[3] if parts[3] != "-" else None,
                    tuple(ranges),
                    "fail" in flags or "fail?" in flags,
                )
            )
        return sorted(nodes, key=lambda n: n.service)

    def node_client(self, service: str, **kwargs):
        """A plain client on one cluster node's published port (no redirections
        followed: the drills' admin commands)."""
        import redis  # the benchmarks and tests have it; the app image's own is unrelated

        return redis.Redis(
            host="127.0.0.1", port=int(self.port(service, 6379)), socket_timeout=10, **kwargs
        )

    def primaries(self) -> list[ClusterNode]:
        return [n for n in self.cluster_nodes() if n.role == "primary" and not n.failed]

    def owner_of(self, key: str) -> ClusterNode:
        """The primary serving ``key``'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for node in self.primaries():
            if any(first <= slot <= last for first, last in node.ranges):
                return node
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        return next(n for n in self.cluster_nodes() if n.primary_id == primary.id and not n.failed)

    def flush_cache(self) -> None:
        if not self.cluster:
            self.redis_cli("FLUSHALL")
            return
        for node in self.primaries():
            self.redis_cli("FLUSHALL", node=node.service)
