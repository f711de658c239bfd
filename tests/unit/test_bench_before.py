"""The bench stack's ``before`` system runs the lab as it was at a git ref.

Apps older than the generated passwords read theirs from ``DATABASE_URL``
only: the bench stack's command for ``app-before`` puts the password from
``DATABASE_PASSWORD_FILE`` into the URL before gunicorn starts.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import compose_loader

ROOT = Path(__file__).resolve().parents[2]


def before_command() -> list[str]:
    yaml, loader = compose_loader()
    path = ROOT / "loadtest" / "benchstack" / "compose.yaml"
    compose = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a SafeLoader
    return compose["services"]["app-before"]["command"]


def run_before_command(monkeypatch, tmp_path: Path, url: str, password: str) -> tuple[str, list]:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(secret))
    started: list = []
    monkeypatch.setattr(os, "execvp", lambda file, args: started.append((file, args)))
    command = before_command()
    assert command[:2] == ["python", "-c"]
    exec(compile(command[2], "app-before", "exec"), {})  # noqa: S102 - our own compose file
    return os.environ["DATABASE_URL"], started


@pytest.mark.parametrize("password", ["0123abcd", "p@ss:w/rd%?#"])
def test_the_before_app_gets_its_password_in_the_url_and_starts_gunicorn(
    monkeypatch, tmp_path, password
):
    url, started = run_before_command(
        monkeypatch, tmp_path, "postgresql://cachelab_app@postgres:5432/lab", password
    )
    parsed = urllib.parse.urlsplit(url)
    assert (parsed.username, parsed.hostname, parsed.port, parsed.path) == (
        "cachelab_app", "postgres", 5432, "/lab",
    )  # fmt: skip
    assert urllib.parse.unquote(parsed.password or "") == password
    assert started == [
        ("gunicorn", ["gunicorn", "--config", "/srv/gunicorn.conf.py",
                      "cachelab.web.app:create_app()"]),
    ]  # fmt: skip


def test_a_url_that_has_its_password_is_left_as_it_is(monkeypatch, tmp_path):
    given = "postgresql://cachelab_app:given@postgres:5432/lab"
    url, started = run_before_command(monkeypatch, tmp_path, given, "other")
    assert url == given
    assert len(started) == 1
