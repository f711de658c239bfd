"""The benchmarks' own stack and the systems in it (loadtest/benchstack/compose.yaml).

``hits`` (closed loop), ``capacity`` (open loop) and ``sweep`` measure the same
systems, each under the lab's CPU limits, on one Redis and one PostgreSQL:

* the strategies through the lab's Nginx (``two-tier``, ``swr``,
  ``cache-aside``, ``edge``), and ``two-tier@app`` at the app's own port;
* ``flask-caching``: loadtest/baseline/app.py behind the same Nginx image and
  configuration, and ``flask-caching@app`` at its port -- what a user would
  pick instead;
* ``ceiling``: Nginx serving a static copy of the answer;
* ``before`` (``--before REF``): the lab's app and Nginx built from a git ref,
  with the CPU limits and settings it had there -- the "before" of a change;
* ``two-tier@100ms`` (on request): today's lab with the kernel's default
  100 ms CFS period instead of compose.yaml's 10 ms -- what the period alone does;
* ``two-tier@cluster``, ``swr@cluster``, ``cache-aside@cluster`` (``hits
  --topology cluster|both``): the strategies at the app's port on the lab's
  Valkey Cluster (loadtest/benchstack/compose.cluster.yaml: compose.cluster.yaml's
  three primaries and three replicas); their cache CPU is the sum over every node.

Every system answers ``GET /api/version?item=<n>`` (the baseline and the
ceiling ignore ``item``).
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass
from pathlib import Path

import requests

from . import cgroups, images
from .errors import BenchError
from .stack import CLUSTER_NODES, IMAGE_TAG, ROOT, Stack, engine_image, wait_until
from .stackdb import SECRETS

DEFAULT_PROJECT = "cachelab-bench"
BENCH_FILE = ROOT / "loadtest" / "benchstack" / "compose.yaml"
CLUSTER_FILES = (
    ROOT / "compose.cluster.yaml",
    ROOT / "loadtest" / "benchstack" / "compose.cluster.yaml",
)
TOPOLOGIES = ("single", "cluster", "both")
PATH = "/api/version"


@dataclass(frozen=True)
class System:
    name: str
    label: str
    service: str  # the service the load goes to (and whose published port the checks use)
    port: int  # its port on the stack's network
    cpu_services: tuple[str, ...]  # whose CPU counts for it
    ours: bool = True  # the lab's app behind it (X-Cache, strategies)
    strategy: str | None = None
    profile: str | None = None  # a Compose profile it needs
    cache_services: tuple[str, ...] = ("redis",)  # the cache it uses (its CPU reported apart)

    @property
    def clustered(self) -> bool:
        return self.cache_services == CLUSTER_NODES


SYSTEMS = (
    System("ceiling", "Nginx static page (ceiling)", "ceiling", 8080, ("ceiling",), ours=False),
    System(
        "edge",
        "edge (Nginx micro-cache + two-tier)",
        "nginx-edge",
        8080,
        ("nginx-edge", "app-edge"),
        strategy="edge",
    ),
    System(
        "two-tier",
        "two-tier (default), through Nginx",
        "nginx",
        8080,
        ("nginx", "app"),
        strategy="two-tier",
    ),
    System(
        "before",
        "two-tier through Nginx, before (--before)",
        "nginx-before",
        8080,
        ("nginx-before", "app-before"),
        strategy="two-tier",
        profile="before",
    ),
    System("two-tier@app", "two-tier, app port", "app", 8000, ("app",), strategy="two-tier"),
    System(
        "swr", "swr, through Nginx", "nginx-swr", 8080, ("nginx-swr", "app-swr"), strategy="swr"
    ),
    System(
        "cache-aside",
        "cache-aside, through Nginx",
        "nginx-cache-aside",
        8080,
        ("nginx-cache-aside", "app-cache-aside"),
        strategy="cache-aside",
    ),
    System(
        "flask-caching",
        "Flask-Caching (`@cache.cached`, Redis), through Nginx",
        "nginx-baseline",
        8080,
        ("nginx-baseline", "baseline"),
        ours=False,
    ),
    System(
        "flask-caching@app",
        "Flask-Caching, app port",
        "baseline",
        8000,
        ("baseline",),
        ours=False,
    ),
    System(
        "two-tier@100ms",
        "two-tier through Nginx, 100 ms CFS periods",
        "nginx-cfs100",
        8080,
        ("nginx-cfs100", "app-cfs100"),
        strategy="two-tier",
        profile="variants",
    ),
    System(
        "two-tier@cluster",
        "two-tier on the Valkey Cluster, app port",
        "app-cluster",
        8000,
        ("app-cluster",),
        strategy="two-tier",
        cache_services=CLUSTER_NODES,
    ),
    System(
        "swr@cluster",
        "swr on the Valkey Cluster, app port",
        "app-swr-cluster",
        8000,
        ("app-swr-cluster",),
        strategy="swr",
        cache_services=CLUSTER_NODES,
    ),
    System(
        "cache-aside@cluster",
        "cache-aside on the Valkey Cluster, app port",
        "app-cache-aside-cluster",
        8000,
        ("app-cache-aside-cluster",),
        strategy="cache-aside",
        cache_services=CLUSTER_NODES,
    ),
)
BY_NAME = {system.name: system for system in SYSTEMS}
BASELINE, CEILING = "flask-caching", "ceiling"


def systems_of(topology: str) -> list[str]:
    """The default systems of a topology (the ceiling in every one; none that needs a
    profile): ``single`` one Redis, ``cluster`` the Valkey Cluster, ``both`` side by side."""
    return [
        s.name
        for s in SYSTEMS
        if not s.profile
        and (topology == "both" or s.name == CEILING or s.clustered == (topology == "cluster"))
    ]


def make_stack(project: str, delay: float, engine: str, cluster: bool = False) -> Stack:
    """The bench stack's handle (nothing started yet). Its images are tagged
    ``bench-<CACHELAB_IMAGE_TAG>``: apart from the test stacks' (the coverage build
    under ``<CACHELAB_IMAGE_TAG>``) and from other checkouts'."""
    tag = f"bench-{IMAGE_TAG}"
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "APP_DB_PASSWORD": secrets.token_hex(16),
        "CACHE_IMAGE": engine_image(engine),
        "APP_IMAGE": f"cachelab/app:{tag}",
        "NGINX_APP_IMAGE": f"cachelab/nginx:{tag}",
        "BASELINE_IMAGE": f"cachelab/baseline:{tag}",
        "WRK_IMAGE": f"cachelab/wrk:{tag}",
        "BEFORE_APP_IMAGE": f"cachelab/app:{tag}-before",
        "BEFORE_NGINX_IMAGE": f"cachelab/nginx:{tag}-before",
        "SLOW_QUERY_SECONDS": f"{delay:g}",
        "WRITE_API_TOKEN": "",
    }
    files = [ROOT / "compose.yaml", BENCH_FILE, *(CLUSTER_FILES if cluster else ())]
    return Stack(project=project, files=files, env=env)


def attach(project: str, delay: float, engine: str, cluster: bool = False) -> Stack:
    """The handle of a bench stack an earlier run left (``--keep``), for ``--reuse``:
    its passwords are read back from the volumes the `passwords` service wrote
    (through the running containers that mount them)."""
    stack = make_stack(project, delay, engine, cluster)
    for name, (service, variable) in SECRETS.items():
        try:
            stack.container(service)
        except LookupError as exc:
            raise BenchError(
                f"--reuse: no bench stack in Compose project {project} (start one with --keep)"
            ) from exc
        del stack.env[variable]  # read the stack's own, not this run's new one
        stack.env[variable] = stack.secret(name)
    return stack


def open_stack(args: argparse.Namespace, cluster: bool = False) -> Stack:
    """A new bench stack, or the one ``--reuse`` names (with the Valkey Cluster's
    files when ``cluster``)."""
    if getattr(args, "reuse", False):
        return attach(args.project, args.delay, args.engine, cluster)
    return make_stack(args.project, args.delay, args.engine, cluster)


def profiles(systems: list[System]) -> list[str]:
    found = sorted({s.profile for s in systems if s.profile})
    return [arg for profile in found for arg in ("--profile", profile)]


def services_for(systems: list[System], generators: tuple[str, ...]) -> list[str]:
    names = {service for system in systems for service in (system.service, *system.cpu_services)}
    return sorted(names) + list(generators)


def build(
    stack: Stack, systems: list[System], generators: tuple[str, ...], reuse: bool = False
) -> None:
    """Build the images, after removing what an earlier run of this project left
    (``--keep``): its database volume has other passwords. With ``reuse``, nothing."""
    if reuse:
        return
    if stack.docker.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack.project}"}
    ):
        down(stack)
    buildable = [s for s in services_for(systems, generators) if s not in ("k6", "ceiling")]
    buildable = [s for s in buildable if not s.endswith("-before")]
    stack.compose("build", "--quiet", *buildable, timeout=1500)


def up(stack: Stack, systems: list[System], generators: tuple[str, ...]) -> None:
    """Start (or update) the services and wait for their healthchecks. Once more on a
    failure: on a busy machine an app may pass its healthcheck's start period and be
    marked unhealthy a few seconds before it answers."""
    command = [
        *profiles(systems),
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "240",
        *services_for(systems, generators),
    ]
    try:
        stack.compose(*command, timeout=600)
    except RuntimeError:
        stack.compose(*command, timeout=600)


def down(stack: Stack) -> None:
    stack.compose(
        "--profile",
        "before",
        "--profile",
        "variants",
        "--profile",
        "cache-bench",
        "down",
        "-v",
        "--remove-orphans",
        "--timeout",
        "10",
        check=False,
    )


def build_before(stack: Stack, ref: str) -> str:
    """The `before` system's images, built from git ``ref``; returns its commit."""
    return images.build_before(ref, stack.env["BEFORE_APP_IMAGE"], stack.env["BEFORE_NGINX_IMAGE"])


def request_timeout(delay: float) -> float:
    """A request may wait for the slow query (expiry mode): count it, never time it out."""
    return max(10.0, delay * 3 + 5)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark on the bench stack takes."""
    parser.add_argument(
        "--engine",
        choices=("valkey", "redis"),
        default="valkey",
        help="cache engine image (default valkey)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    parser.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"Compose project of the bench stack (default {DEFAULT_PROJECT})",
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench stack running")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="run on the bench stack an earlier --keep left in --project (not rebuilt)",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="output folder (default results/<UTC timestamp>)"
    )
    parser.add_argument(
        "--machine",
        default=None,
        help="machine description for the report (default: from this host)",
    )


def chosen_systems(args: argparse.Namespace) -> list[System]:
    names = list(args.systems)
    if args.before and "before" not in names:
        names.insert(names.index("two-tier") + 1 if "two-tier" in names else 0, "before")
    if "before" in names and not args.before:
        raise BenchError("the `before` system needs --before REF (a git commit to build)")
    return [BY_NAME[name] for name in names]


# -- answers ---------------------------------------------------------------------------
def base_url(stack: Stack, system: System) -> str:
    return f"http://127.0.0.1:{stack.port(system.service, system.port)}"


def check_answer(stack: Stack, system: System, timeout: float, item: int = 0) -> dict:
    """GET the page from the host until it answers 200 with a PostgreSQL version."""
    url = base_url(stack, system) + f"{PATH}?item={item}"

    def answered():
        response = requests.get(url, timeout=timeout)
        body = response.json()
        if response.status_code == 200 and str(body.get("version", "")).startswith("PostgreSQL"):
            return {
                "status": response.status_code,
                "version": body["version"],
                "x_cache": response.headers.get("X-Cache"),
                "strategy": body.get("strategy"),
                "item": body.get("item"),
            }
        return None

    return wait_until(answered, timeout, interval=0.2, message=f"{system.name} to answer {PATH}")


def warm(stack: Stack, system: System, delay: float, items: range = range(1)) -> dict:
    """Fill the keys, then wait until a request is served from the cache."""
    first = check_answer(stack, system, timeout=delay + 60)
    session = requests.Session()
    base = base_url(stack, system)
    for item in items:
        if item:
            check_answer(stack, system, timeout=delay + 60, item=item)
    if system.ours:
        wait_until(
            lambda: (
                session.get(base + f"{PATH}?item=0", timeout=10).headers.get("X-Cache") == "HIT"
            ),
            delay + 30,
            interval=0.05,
            message=f"{system.name} to serve a HIT",
        )
    return first


# -- CPU --------------------------------------------------------------------------------
def containers(stack: Stack, systems: list[System]) -> dict:
    names = {s for system in systems for s in (*system.cpu_services, *system.cache_services)}
    return {name: stack.container(name) for name in names}


def cpu(found: dict) -> dict[str, cgroups.Cpu]:
    return {name: cgroups.counters(container) for name, container in found.items()}
