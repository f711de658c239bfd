"""Lint, format, types and the lock: the project's habits, checked like its code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loadtest.stack import ROOT

SOURCES = ["app/cachelab", "app/gunicorn.conf.py", "loadtest", "tests"]
TYPED = SOURCES
CONFIG = str(ROOT / "app" / "pyproject.toml")
TOOLS = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lints_clean():
    result = run(str(TOOLS / "ruff"), "check", "--config", CONFIG, *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = run(str(TOOLS / "ruff"), "format", "--check", "--config", CONFIG, *SOURCES)
    assert result.returncode == 0, (
        "run `ruff format --config app/pyproject.toml "
        "app/cachelab loadtest tests`\n" + result.stdout + result.stderr
    )


_type_check: subprocess.Popen[str] | None = None


def start_type_check() -> subprocess.Popen[str]:
    """mypy over the sources, started once. A cold run takes about 14 s of one
    core while the unit layer mostly waits on sockets, so tests/conftest.py starts
    it as soon as the session is collected and the test below only collects it."""
    global _type_check
    if _type_check is None:
        _type_check = subprocess.Popen(
            [str(TOOLS / "mypy"), "--config-file", CONFIG, *TYPED],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return _type_check


def test_mypy_finds_no_type_errors():
    check = start_type_check()
    output, _ = check.communicate(timeout=300)
    assert check.returncode == 0, output


def test_the_lock_matches_pyproject():
    uv = ROOT / ".venv-tools" / "bin" / "uv"  # the version app/pyproject.toml requires
    if not uv.exists():
        pytest.fail("uv not found in .venv-tools (scripts/test installs it there)")
    result = run(str(uv), "lock", "--check", "--project", "app")
    assert result.returncode == 0, "run `uv lock --project app`\n" + result.stderr


def test_the_hashed_uv_pin_is_the_required_version():
    """uv installs everything else, so it is hash-pinned too, at the one version
    app/pyproject.toml requires (uv refuses to run at any other)."""
    required = tomllib.loads((ROOT / "app" / "pyproject.toml").read_text())["tool"]["uv"][
        "required-version"
    ]
    pin = (ROOT / "app" / "requirements-uv.txt").read_text()
    pinned = re.findall(r"^uv==(\S+) \\$", pin, re.MULTILINE)
    assert pinned and required == f"=={pinned[0]}", (required, pinned)
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", pin)) >= 10  # every platform's wheel
