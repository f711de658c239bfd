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

from loadtest.stack import Stack

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


def _running_stack(engine: str):
    lab = Stack.create(engine=engine)
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


@pytest.fixture(scope="session", params=["valkey", "redis"])
def engine_stack(request, docker_available) -> Stack:
    """The stack on each cache engine: the caching and fault suites run on both."""
    if request.param == "valkey":
        yield request.getfixturevalue("stack")
    else:
        yield from _running_stack(request.param)


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
            if c.labels.get("com.docker.compose.service") != "db-init"
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
