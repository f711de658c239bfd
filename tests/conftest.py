"""Fixtures: one real Compose stack for the session, reset between tests.

The stack is built and started once (small delay and TTL, unique project name,
ephemeral ports) and removed with ``down -v`` at the end. Tests that change
settings or break containers go through fixtures that put it back.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from loadtest.stack import ONE_SHOT_SERVICES, Stack

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(available: bool, tool: str) -> None:
    """Skip for a missing tool on a developer machine; fail under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{tool} is required under CI=true but is not available")
    pytest.skip(f"{tool} not available")


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "compose", "version"], capture_output=True, timeout=20
            ).returncode
            == 0
            and subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_available() -> None:
    require_tool(_docker_ready(), "docker engine with the compose plugin")


def _running_stack(engine: str, topology: str = "single"):
    lab = Stack.create(engine=engine, topology=topology)
    try:
        lab.compose("build", "--quiet", timeout=1200)
        lab.up()
        lab.wait_ready()
        yield lab
    finally:
        if os.environ.get("KEEP_STACK") != "1":
            lab.down()


@pytest.fixture(scope="session")
def stack(docker_available) -> Stack:
    """The session's stack, on the default cache engine (Valkey)."""
    yield from _running_stack("valkey")


@pytest.fixture(scope="session")
def redis_stack(docker_available) -> Stack:
    """The stack on Redis 7 instead of Valkey."""
    yield from _running_stack("redis")


@pytest.fixture(scope="session", params=["valkey", "redis"])
def engine_stack(request, docker_available) -> Stack:
    """The stack on each cache engine: the caching and fault suites run on both."""
    return request.getfixturevalue("stack" if request.param == "valkey" else "redis_stack")


@pytest.fixture(scope="session")
def cluster_stack(docker_available) -> Stack:
    """The stack with its cache as a Valkey Cluster (compose.cluster.yaml)."""
    yield from _running_stack("valkey", topology="cluster")


def _reset(stack: Stack) -> Stack:
    """Default test settings, all containers running, empty cache."""
    for container in stack.docker.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack.project}"}
    ):
        if container.status == "paused":
            container.unpause()
    needs_reset = (
        bool(stack.overrides)
        or len(stack.containers("app")) != 1
        or any(
            c.status != "running"
            for c in stack.docker.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={stack.project}"}
            )
            if c.labels.get("com.docker.compose.service") not in ONE_SHOT_SERVICES
        )
    )
    if needs_reset:
        stack.reconfigure()
    stack.wait_ready()
    stack.flush_cache()
    return stack


@pytest.fixture
def lab(stack: Stack) -> Stack:
    """The session stack with default test settings, all containers running, empty cache."""
    return _reset(stack)


@pytest.fixture
def engine_lab(engine_stack: Stack) -> Stack:
    """As ``lab``, once per cache engine."""
    return _reset(engine_stack)


@pytest.fixture
def cluster_lab(cluster_stack: Stack) -> Stack:
    """As ``lab``, on the cluster."""
    return _reset(cluster_stack)


@pytest.fixture(params=["valkey", "redis", "cluster"])
def topology_lab(request) -> Stack:
    """As ``lab``, on each engine and on the cluster: for the tests whose
    behaviour depends on where the keys live (docs/testing.md says which)."""
    if request.param == "cluster":
        return _reset(request.getfixturevalue("cluster_stack"))
    if request.param == "valkey":
        return _reset(request.getfixturevalue("stack"))
    return _reset(request.getfixturevalue("redis_stack"))
