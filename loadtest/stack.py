"""A handle on one Compose project of the lab, for tests, benchmarks and soaks.

Everything goes through the real stack: HTTP to Nginx on a published
127.0.0.1 port, slow-query counts from PostgreSQL's own ``pg_stat_statements``
(exact the moment a query returns), faults with the Docker SDK on real
containers.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import docker
import requests
from prometheus_client.parser import text_string_to_metric_families

from .cachenodes import CacheNodes

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROJECT = "cachelab"  # compose.yaml's `name:`: the lab a user runs
T = TypeVar("T")

# The tag of the images a test or bench run builds: set CACHELAB_IMAGE_TAG to keep
# two checkouts (worktrees) on one Docker engine from overwriting each other's,
# and CACHELAB_PROJECT_PREFIX to tell their Compose projects apart.
IMAGE_TAG = os.environ.get("CACHELAB_IMAGE_TAG", "test")
PROJECT_PREFIX = os.environ.get("CACHELAB_PROJECT_PREFIX", "cachelab")
# Services that run once and exit (compose.yaml): never "running".
ONE_SHOTS = ("passwords", "db-init", "cluster-init")
# The generated passwords (compose.yaml's `passwords` service): which running
# container mounts each, and the variable that overrides it.
SECRETS = {
    "owner": ("postgres", "POSTGRES_PASSWORD"),
    "app": ("app", "APP_DB_PASSWORD"),
}
# Small delay and TTL so behaviour over several expiries fits in seconds.
TEST_ENV = {
    "SLOW_QUERY_SECONDS": "1",
    "SLOW_CALL_LOG": "on",  # slow queries counted per key (table slow_calls)
    "CACHE_TTL_SECONDS": "30",  # long: XFetch early refreshes stay improbable (exp(-27))
    "CACHE_GRACE_SECONDS": "60",
    "CACHE_LOCK_WAIT_SECONDS": "10",
    "BREAKER_COOLDOWN_SECONDS": "1",
    "EDGE_METRICS_SECONDS": "1",  # Nginx's request counts, summed every second
    "APP_IMAGE": f"cachelab/app:{IMAGE_TAG}",
    "NGINX_APP_IMAGE": f"cachelab/nginx:{IMAGE_TAG}",
    "LOCUST_IMAGE": f"cachelab/locust:{IMAGE_TAG}",
}
# The cache engines every caching and fault test runs on: the image of each
# (VALKEY_IMAGE / REDIS_IMAGE on machines that build stand-ins).
ENGINES = {
    "valkey": ("VALKEY_IMAGE", "valkey/valkey:8-bookworm"),
    "redis": ("REDIS_IMAGE", "redis:7.4-bookworm"),
}
# Where the cache runs: one server (compose.yaml's `redis`), or a Valkey Cluster
# of three primaries and three replicas (compose.cluster.yaml, REDIS_CLUSTER=on).
TOPOLOGIES = {"single": (), "cluster": ("compose.cluster.yaml",)}
TEST_TOPOLOGIES = {"single": (), "cluster": ("tests/compose.cluster.test.yaml",)}
CLUSTER_NODES = tuple(f"cache-{n}" for n in range(1, 7))
# Statements counted as slow queries (pg_stat_statements' normalised text).
LOOKUP_ROUTES = ("version", "page", "items")  # the routes Nginx's edge cache may answer
SLOW_STATEMENTS = {
    "version": "SELECT slow_version()",
    "item": "SELECT id, payload, version, updated_at FROM slow_item($1)",
}


def coverage_dir() -> Path:
    """Where the test stacks' containers write their coverage data (the app runs
    as uid 10001, so anyone may write; scripts/test combines and reports it)."""
    path = Path(os.environ.get("COVERAGE_DATA_DIR", ROOT / ".coverage-data"))
    path.mkdir(exist_ok=True)
    path.chmod(0o777)
    return path


def engine_image(engine: str) -> str:
    variable, default = ENGINES[engine]
    return os.environ.get(variable) or default


def project_name(kind: str) -> str:
    """A unique Compose project name for a test or bench run: <prefix>-<kind>-<random>."""
    return f"{PROJECT_PREFIX}-{kind}-{secrets.token_hex(3)}"


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {message}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


@dataclass
class Stack(CacheNodes):
    project: str
    files: list[Path]
    env: dict[str, str]
    overrides: dict[str, str] = field(default_factory=dict)
    scale: dict[str, int] = field(default_factory=lambda: {"app": 1})
    _docker: docker.DockerClient | None = None

    @classmethod
    def running_lab(cls) -> Stack:
        """The user's lab, as started by `docker compose up` in the repository."""
        return cls(project=DEFAULT_PROJECT, files=[ROOT / "compose.yaml"], env={})

    @classmethod
    def create(
        cls,
        kind: str = "test",
        extra_files: tuple[str, ...] = (),
        engine: str = "valkey",
        topology: str = "single",
    ) -> Stack:
        """A test stack; its database passwords are generated by the stack
        itself, as on a user's first `docker compose up` (see :meth:`secret`)."""
        env = {
            **TEST_ENV,
            # The cluster's drills run for about a minute after warming their keys:
            # no key expires during one (an expiry's refresh is one more query).
            **({"CACHE_TTL_SECONDS": "120"} if topology == "cluster" else {}),
            "CACHE_IMAGE": engine_image(engine),
            "WRITE_API_TOKEN": secrets.token_hex(16),
            "COVERAGE_DIR": str(coverage_dir()),
        }
        files = [ROOT / "compose.yaml", ROOT / "tests" / "compose.test.yaml"]
        files += [ROOT / f for f in TOPOLOGIES[topology] + TEST_TOPOLOGIES[topology]]
        files += [ROOT / f for f in extra_files]
        return cls(project=project_name(kind), files=files, env=env)

    # -- compose ------------------------------------------------------------
    def compose(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        command = ["docker", "compose", "-p", self.project]
        for path in self.files:
            command += ["-f", str(path)]
        full_env = {**os.environ, **self.env, **self.overrides, **(env or {})}
        result = subprocess.run(
            command + list(args),
            cwd=ROOT,
            env=full_env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def up(self, *services: str, scale: dict[str, int] | None = None) -> None:
        args = ["up", "-d", "--wait", "--wait-timeout", "180"]
        for service, count in (scale or {}).items():
            args += ["--scale", f"{service}={count}"]
        self.compose(*args, *services)
        self.__dict__.pop("_base_url", None)  # a recreated nginx gets a new ephemeral port

    def reconfigure(self, scale: dict[str, int] | None = None, **overrides: str) -> None:
        """Recreate what changed with new app settings and wait for the page to work."""
        self.overrides = dict(overrides)
        self.scale = dict(scale or {"app": 1})
        self.up(scale=self.scale)
        self.wait_ready()
        if self.scale.get("app", 1) > 1:
            self.wait_every_replica_reached()

    def ensure(self, replicas: int = 1, **overrides: str) -> None:
        """These settings, every container running: recreate containers only
        when the settings or the number of app replicas differ from what runs
        (or a container is missing or stopped), else just unpause and wait."""
        for container in self.project_containers():
            if container.status == "paused":
                container.unpause()
        scale = {"app": replicas}
        broken = len(self.containers("app")) != replicas or any(
            c.status != "running"
            for c in self.project_containers()
            if c.labels.get("com.docker.compose.service") not in ONE_SHOTS
        )
        if broken or overrides != self.overrides or scale != self.scale:
            self.reconfigure(scale=scale, **overrides)
        else:
            self.wait_ready()

    def project_containers(self) -> list:
        return self.docker.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)

    # -- endpoints ----------------------------------------------------------
    def port(self, service: str, container_port: int) -> str:
        out = self.compose("port", service, str(container_port)).stdout.strip()
        return out.rsplit(":", 1)[1]

    @property
    def base_url(self) -> str:
        if not hasattr(self, "_base_url"):
            self._base_url = f"http://127.0.0.1:{self.port('nginx', 8080)}"
        return self._base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, timeout: float = 30, **kwargs) -> requests.Response:
        return requests.get(self.url(path), timeout=timeout, **kwargs)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            # Asked afresh each time: a restarted or recreated nginx container
            # (`compose up` of a dependent service may do either) gets a new
            # ephemeral port.
            self.__dict__.pop("_base_url", None)
            return self.get("/readyz", timeout=5).status_code == 200

        wait_until(ready, timeout, message="/readyz to answer 200 through nginx")

    def wait_every_replica_reached(self, timeout: float = 60) -> None:
        """Wait until Nginx sends requests to every running app container.

        Nginx learns a new replica set from its watcher, which reloads it within
        ``UPSTREAM_WATCH_SECONDS`` of the change; until then it may know only
        some replicas, or the address of a removed one (a request to it moves
        on to a live one, so /readyz answers 200 all the same). Proof that a
        container is reached: its count of unmatched paths, which no healthcheck
        asks for, grows while probes go through Nginx."""
        running = [c for c in self.containers("app") if c.status == "running"]

        def unmatched(container) -> float:
            samples = self.container_metrics(container)
            name = "cachelab_http_request_duration_seconds_count"
            return metric(samples, name, route="unmatched")

        before = {c.id: unmatched(c) for c in running}

        def reached() -> bool:
            for _ in range(4 * len(running)):
                self.get(f"/replica-probe-{secrets.token_hex(4)}", timeout=5)
            return all(unmatched(c) > before[c.id] for c in running)

        wait_until(reached, timeout, interval=0.5, message="nginx to reach every app replica")

    # -- postgres -----------------------------------------------------------
    def secret(self, name: str) -> str:
        """A database password (owner, app): the environment's when the run chose
        it, else the one the `passwords` service generated (read in a container
        that mounts it)."""
        service, variable = SECRETS[name]
        if self.env.get(variable):
            return self.env[variable]
        code, out = self.container(service).exec_run(["cat", f"/run/lab-secrets/{name}/password"])
        if code != 0:
            raise RuntimeError(f"cannot read the {name} password: {out!r}")
        return out.decode().strip()

    def pg_connect(self):
        import psycopg2  # only tests need a direct connection (published port)

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port("postgres", 5432),
            user="lab",
            password=self.secret("owner"),
            dbname="lab",
            connect_timeout=3,
        )

    def psql(self, query: str) -> str:
        """Run one query with psql inside the postgres container (local socket)."""
        code, out = self.container("postgres").exec_run(
            [
                "sh",
                "-c",
                'psql -X -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "$0"',
                query,
            ]
        )
        if code != 0:
            raise RuntimeError(f"psql failed: {out.decode(errors='replace')[-500:]}")
        return out.decode().strip()

    def slow_calls(self, source: str = "version") -> int:
        """Slow queries PostgreSQL has finished (pg_stat_statements, updated
        before the query's result reaches the app, so exact at once)."""
        return int(
            self.psql(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                f"WHERE query = '{SLOW_STATEMENTS[source]}'"
            )
        )

    def slow_calls_by_item(self) -> dict[int, int]:
        """Item queries PostgreSQL started, per item id (the table slow_calls,
        which slow_item() writes when SLOW_CALL_LOG=on: the test stacks)."""
        out = self.psql("SELECT item, count(*) FROM slow_calls WHERE source = 'item' GROUP BY item")
        counts: dict[int, int] = {}
        for line in out.splitlines():
            item, calls = line.split("|")
            counts[int(item)] = int(calls)
        return counts

    def running_slow_queries(self, source: str = "version") -> int:
        """Slow queries running now (started, not finished)."""
        pattern = {"version": "%slow_version()%", "item": "%slow_item(%"}[source]
        return int(
            self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                f"AND query LIKE '{pattern}' AND pid <> pg_backend_pid()"
            )
        )

    def settled_slow_calls(
        self, at_least: int = 0, timeout: float = 30, source: str = "version"
    ) -> int:
        """The finished count once no slow query is running any more (queries
        a run left behind, e.g. refreshes, land first) and it reached ``at_least``."""

        def settled() -> tuple[int] | None:
            if self.running_slow_queries(source):
                return None
            count = self.slow_calls(source)
            return (count,) if count >= at_least else None

        found = wait_until(
            settled,
            timeout,
            interval=0.1,
            message=f"no running {source} query and >= {at_least} finished",
        )
        assert found is not None  # wait_until returns only a truthy value
        return found[0]

    # -- containers ---------------------------------------------------------
    @property
    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = docker.from_env()
        return self._docker

    def containers(self, service: str) -> list:
        found = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        return sorted(found, key=lambda c: c.name)

    def container(self, service: str):
        found = self.containers(service)
        if not found:
            raise LookupError(f"no container for service {service}")
        return found[0]

    def app_metrics(self) -> dict[str, float]:
        """Prometheus samples summed over every running app container."""
        totals: dict[str, float] = {}
        for container in self.containers("app"):
            container.reload()
            if container.status != "running":
                continue
            for name, value in self.container_metrics(container).items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    @staticmethod
    def container_metrics(container) -> dict[str, float]:
        """One app container's /metrics (port 8000 inside it; Nginx does not expose it)."""
        script = (
            "import urllib.request;print(urllib.request.urlopen("
            "'http://127.0.0.1:8000/metrics',timeout=5).read().decode())"
        )
        code, out = container.exec_run(["python", "-c", script])
        if code != 0:
            raise RuntimeError(f"metrics scrape failed in {container.name}: {out!r}")
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(out.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def edge_counts(self, service: str = "nginx", routes: tuple[str, ...] = LOOKUP_ROUTES) -> dict:
        """Nginx's requests so far by edge cache status (``cachelab_edge_requests_total``,
        summed over ``routes``); empty when this Nginx does not count them."""
        return edge_counts(self.edge_metrics_text(service), routes)

    def edge_metrics_text(self, service: str = "nginx") -> str:
        """Nginx's :9145/metrics (not published: read inside the container)."""
        try:
            container = self.container(service)
        except LookupError:
            return ""
        code, out = container.exec_run(
            ["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:9145/metrics"]
        )
        return out.decode(errors="replace") if code == 0 else ""

    def logs(self, service: str, tail: int = 200) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), service, check=False).stdout


def edge_counts(text: str, routes: tuple[str, ...] = LOOKUP_ROUTES) -> dict[str, float]:
    """``cachelab_edge_requests_total`` from Prometheus text, by cache status, over ``routes``."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "cachelab_edge_requests_total":
                continue
            if sample.labels.get("route") in routes:
                status = sample.labels.get("cache", "none")
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            total += value
    return total


def parse_json(response: requests.Response) -> dict:
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text[:300]}") from exc
