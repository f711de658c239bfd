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
        return subprocess.run(["docker", "compose", "version"], capture_output=True,
                              timeout=20).returncode == 0 and subprocess.run(
            ["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_available() -> None:
    require_tool(_docker_ready(), "docker engine with the compose plugin")


@pytest.fixture(scope="session")
def stack(docker_available) -> Stack:
    lab = Stack.create()
    try:
        lab.compose("build", "--quiet", timeout=1200)
        lab.up()
        lab.wait_ready()
        yield lab
    finally:
        if os.environ.get("KEEP_STACK") != "1":
            lab.down()


@pytest.fixture
def lab(stack: Stack) -> Stack:
    """The session stack with default test settings, all containers running, empty cache."""
    for container in stack.docker.containers.list(all=True, filters={
            "label": f"com.docker.compose.project={stack.project}"}):
        if container.status == "paused":
            container.unpause()
    needs_reset = bool(stack.overrides) or len(stack.containers("app")) != 1 or any(
        c.status != "running" for c in stack.docker.containers.list(all=True, filters={
            "label": f"com.docker.compose.project={stack.project}"})
        if c.labels.get("com.docker.compose.service") != "db-init")
    if needs_reset:
        stack.reconfigure()
    stack.wait_ready()
    stack.flush_cache()
    yield stack
