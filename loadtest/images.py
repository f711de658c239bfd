"""Images the benchmarks build outside a Compose project of the lab: the lab as it was
at a git ref (``--before``) and wrk for a ``--target``.

Built with ``docker compose build`` from a throw-away Compose file: Compose
brings its own BuildKit (the app's Dockerfile needs it for its cache mounts),
where ``docker build`` may only have the legacy builder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .errors import BenchError
from .stack import ROOT

DEFAULTS = {"PYTHON_IMAGE": "python:3.12-slim-bookworm", "NGINX_IMAGE": "nginx:1.27-bookworm"}


def base(variable: str) -> str:
    return os.environ.get(variable) or DEFAULTS[variable]


def compose_build(folder: Path, services: dict, timeout: float = 1500) -> None:
    """``docker compose build`` of ``services`` (Compose service definitions) in ``folder``."""
    path = folder / "build.compose.yaml"
    path.write_text(json.dumps({"services": services}))  # JSON is YAML
    result = subprocess.run(
        ["docker", "compose", "-p", f"cachelab-build-{os.getpid()}", "-f", str(path), "build",
         "--quiet"],
        cwd=folder, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"building {', '.join(services)}: {result.stderr[-1500:]}")


def commit_of(ref: str) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"--before {ref}: not a git commit in this checkout ({exc})") from exc


def build_before(ref: str, app_tag: str, nginx_tag: str) -> str:
    """The lab's app and Nginx images as they were at git ``ref``; returns its commit."""
    commit = commit_of(ref)
    folder = Path(tempfile.mkdtemp(prefix="cachelab-before-"))
    try:
        archive = folder / "ref.tar"
        subprocess.run(["git", "archive", "--output", str(archive), commit], cwd=ROOT, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        compose_build(
            folder,
            {
                "app-before": {
                    "image": app_tag,
                    "build": {
                        "context": ".",
                        "dockerfile": "app/Dockerfile",
                        "target": "runtime",
                        "args": {"PYTHON_IMAGE": base("PYTHON_IMAGE")},
                    },
                },
                "nginx-before": {
                    "image": nginx_tag,
                    "build": {"context": "nginx", "args": {"NGINX_IMAGE": base("NGINX_IMAGE")}},
                },
            },
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return commit


def build_wrk(tag: str) -> str:
    """loadtest/benchstack/wrk.Dockerfile under ``tag``."""
    compose_build(
        ROOT / "loadtest" / "benchstack",
        {
            "wrk": {
                "image": tag,
                "build": {
                    "context": ".",
                    "dockerfile": "wrk.Dockerfile",
                    "args": {"PYTHON_IMAGE": base("PYTHON_IMAGE")},
                },
            }
        },
        timeout=900,
    )
    return tag
