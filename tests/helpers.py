"""Helpers shared by every layer of the suite: the one place to import them from.

conftest.py files hold fixtures and hooks only; test modules import these.
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
Server = TypeVar("Server", bound=socketserver.BaseServer)


def require_tool(available: bool, tool: str) -> None:
    """Skip for a missing tool on a developer machine. Under CI=true the skip
    fails the run (tests/conftest.py turns every skip into a failure there)."""
    if not available:
        pytest.skip(f"{tool} not available")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def docker_ready() -> bool:
    """The Docker engine answers and the Compose v2 plugin is installed."""
    if shutil.which("docker") is None:
        return False
    try:
        return all(
            subprocess.run(command, capture_output=True, timeout=20).returncode == 0
            for command in (["docker", "compose", "version"], ["docker", "info"])
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """A test's own HTTP server, answering from a thread until the block ends.
    It polls for shutdown every 50 ms (the default half second would add that to
    every test's teardown)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def compose_loader():
    """pyyaml and a SafeLoader that reads Compose files: a tagged node (``!reset``,
    ``!override``) becomes ``{"__tag__": tag, "value": ...}``."""
    import yaml  # pyyaml: app/pyproject.toml [test]

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, tag_suffix, node):
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return {"__tag__": tag_suffix, "value": value}

    Loader.add_multi_constructor("!", tagged)
    return yaml, Loader
