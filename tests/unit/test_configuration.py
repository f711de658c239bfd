"""Configuration checks that need no stack: a bad variable stops the app
(gunicorn's config), db-init and Nginx's entrypoint with one line naming it,
and the generated passwords are written, kept and read as the *_FILE
convention says. tests/test_bad_input.py keeps one case per container to show
that the same checks stop the real containers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cachelab.cli import main
from cachelab.config import ConfigError, Settings, database_url
from loadtest.stack import ROOT

BASE_ENV = {"DATABASE_URL": "postgresql://u:p@db/lab", "REDIS_URL": "redis://cache:6379/0"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CACHE_TTL_SECONDS", "ten"),
        ("CACHE_STRATEGY", "lru"),
        ("REDIS_URL", "http://redis"),
        ("GUNICORN_WORKERS", "0"),
        ("DB_STATEMENT_TIMEOUT_MS", "900"),  # not above SLOW_QUERY_SECONDS
        ("DB_STATEMENT_TIMEOUT_MS", "0"),
        ("REDIS_SOCKET_TIMEOUT_MS", "fast"),
        ("CACHE_NAMESPACE", "Bad Space"),
        ("DATABASE_URL", "mysql://db/lab"),
        ("GUNICORN_THREADS", "many"),
        ("PROMETHEUS_URL", "prometheus:9090"),
        ("DATABASE_PASSWORD_FILE", "/nonexistent/password"),
    ],
)
def test_a_bad_app_variable_stops_gunicorn_naming_it(variable, value):
    """gunicorn reads app/gunicorn.conf.py in its master before any worker starts."""
    env = {**BASE_ENV, "SLOW_QUERY_SECONDS": "1", variable: value}
    if variable == "DATABASE_PASSWORD_FILE":
        env["DATABASE_URL"] = "postgresql://u@db/lab"
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('app/gunicorn.conf.py')"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "app"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cachelab: invalid configuration: {variable}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"CACHE_TTL_SECONDS": "ten"}, "CACHE_TTL_SECONDS must be an integer"),
        ({"CACHE_TTL_SECONDS": "0"}, "CACHE_TTL_SECONDS must be between 1 and 86400"),
        ({"XFETCH_BETA": "11"}, "XFETCH_BETA must be between 0 and 10"),
        ({"CACHE_STRATEGY": "lru"}, "CACHE_STRATEGY must be one of"),
        ({"REDIS_URL": ""}, "REDIS_URL is required"),
        ({"REDIS_URL": "http://redis"}, "REDIS_URL must be a URL with scheme redis or rediss"),
        ({"PROMETHEUS_URL": "prometheus:9090"}, "PROMETHEUS_URL must be a URL"),
        ({"CACHE_NAMESPACE": "Bad Space"}, "CACHE_NAMESPACE must be 1-32 characters"),
        ({"DB_POOL_SIZE": "8"}, "DB_POOL_SIZE \\(8\\) must be at least CACHE_FILL_SLOTS"),
        ({"CACHE_FILL_SLOTS": "33"}, "CACHE_FILL_SLOTS \\(33\\) must not exceed"),
        ({"GUNICORN_THREADS": "112"}, "CACHE_MISS_SLOTS \\(32\\) \\+ CACHE_FOLLOWER_SLOTS"),
        ({"REDIS_CLUSTER": "on", "REDIS_URL": "redis://cache/2"}, "REDIS_URL must use database 0"),
    ],
)
def test_settings_refuse_each_bad_value_naming_the_variable(change, variable):
    """The same rules in-process (the gunicorn test above runs a few of them as
    a user meets them), including the rules that relate two variables."""
    with pytest.raises(ConfigError, match=f"^{variable}"):
        Settings.from_env({**BASE_ENV, "SLOW_QUERY_SECONDS": "1", "DB_POOL_SIZE": "40", **change})


def test_optional_urls_lose_their_trailing_slash():
    settings = Settings.from_env({**BASE_ENV, "PROMETHEUS_URL": "http://prometheus:9090/"})
    assert settings.prometheus_url == "http://prometheus:9090"
    assert Settings.from_env(BASE_ENV).prometheus_url is None


EDGE_SCRIPT, METRICS_SCRIPT = "15-lab-edge-config.sh", "50-edge-metrics.sh"


@pytest.mark.parametrize(
    ("script", "variable", "value"),
    [
        (EDGE_SCRIPT, "RATE_LIMIT_RPS", "fast"),
        (EDGE_SCRIPT, "RATE_LIMIT_BURST", "-1"),
        (EDGE_SCRIPT, "REAL_IP_FROM", "evil;host"),
        (EDGE_SCRIPT, "UPSTREAM_WATCH_SECONDS", "0"),
        (EDGE_SCRIPT, "APP_UPSTREAM", "app:8000;evil"),
        (EDGE_SCRIPT, "EDGE_CACHE_SECONDS", "0"),
        (EDGE_SCRIPT, "EDGE_CACHE_SECONDS", "61"),
        (EDGE_SCRIPT, "REQUEST_LOG_HIT_SAMPLE", "2"),
        (METRICS_SCRIPT, "EDGE_METRICS_SECONDS", "soon"),
        (METRICS_SCRIPT, "EDGE_METRICS_SECONDS", "0"),
    ],
)
def test_a_bad_edge_variable_stops_nginx_naming_it(tmp_path, script, variable, value):
    """The image's entrypoint runs these scripts before Nginx starts (the metrics
    loop checks its interval before it counts anything)."""
    env = {"PATH": os.environ["PATH"], "NGINX_ENVSUBST_OUTPUT_DIR": str(tmp_path)}
    env.update({"APP_UPSTREAM": "app:8000", variable: value})
    result = subprocess.run(
        ["sh", str(ROOT / "nginx" / "entrypoint.d" / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"nginx: invalid configuration: {variable}"), result.stderr


def test_good_edge_variables_write_the_config(tmp_path):
    env = {"PATH": os.environ["PATH"], "NGINX_ENVSUBST_OUTPUT_DIR": str(tmp_path)}
    env.update(APP_UPSTREAM="app:8000", RATE_LIMIT_RPS="20", RATE_LIMIT_BURST="40")
    script = ROOT / "nginx" / "entrypoint.d" / "15-lab-edge-config.sh"
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "rate=20r/s" in (tmp_path / "00-lab-edge.conf").read_text()
    assert "burst=40" in (tmp_path / "lab-rate-limit.inc").read_text()


# -- passwords as files ------------------------------------------------------------
def test_the_database_password_comes_from_its_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret/with:odd@chars\n")
    env = {"DATABASE_URL": "postgresql://app@db:5432/lab", "DATABASE_PASSWORD_FILE": str(secret)}
    url = database_url(env)
    assert url == "postgresql://app:s3cret%2Fwith%3Aodd%40chars@db:5432/lab"
    assert Settings.from_env({**BASE_ENV, **env}).database_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DATABASE_URL": "postgresql://app:inline@db/lab", "DATABASE_PASSWORD": "x"},
            "DATABASE_URL already holds a password",
        ),
        (
            {"DATABASE_URL": "postgresql://db/lab", "DATABASE_PASSWORD": "x"},
            "DATABASE_URL needs a user name",
        ),
        (
            {"DATABASE_URL": "postgresql://app@db/lab", "DATABASE_PASSWORD_FILE": "/nonexistent"},
            "DATABASE_PASSWORD_FILE: cannot read /nonexistent",
        ),
        (
            {
                "DATABASE_URL": "postgresql://app@db/lab",
                "DATABASE_PASSWORD": "x",
                "DATABASE_PASSWORD_FILE": "/etc/hostname",
            },
            "set DATABASE_PASSWORD or DATABASE_PASSWORD_FILE, not both",
        ),
    ],
)
def test_password_settings_that_cannot_work_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        database_url(env)


def test_an_empty_password_file_is_refused(tmp_path):
    (tmp_path / "password").write_text("\n")
    env = {"DATABASE_URL": "postgresql://app@db/lab"}
    env["DATABASE_PASSWORD_FILE"] = str(tmp_path / "password")
    with pytest.raises(ConfigError, match=r"DATABASE_PASSWORD_FILE: .* is empty"):
        database_url(env)


def test_db_init_names_a_password_file_it_cannot_read():
    env = {
        "DATABASE_URL": "postgresql://lab@db/lab",
        "DATABASE_PASSWORD": "owner-password-0123456789",
        "APP_DB_PASSWORD_FILE": "/nonexistent/app",
    }
    result = CliRunner().invoke(main, ["db-init", "--wait", "0"], env=env)
    assert result.exit_code == 1
    assert "invalid configuration: APP_DB_PASSWORD_FILE: cannot read" in result.output
    short = {**env, "APP_DB_PASSWORD_FILE": "", "APP_DB_PASSWORD": "short"}
    result = CliRunner().invoke(main, ["db-init", "--wait", "0"], env=short)
    assert "invalid configuration: APP_DB_PASSWORD must be at least 16" in result.output


def _passwords(tmp_path: Path, env: dict[str, str] | None = None):
    targets = [f"{name}={tmp_path / name}" for name in ("OWNER", "APP")]
    for name in ("OWNER", "APP"):
        (tmp_path / name).mkdir(exist_ok=True)
    return CliRunner().invoke(
        main, ["passwords", *targets], env={"OWNER": "", "APP": "", **(env or {})}
    )


def test_passwords_are_generated_once_then_kept(tmp_path):
    first = _passwords(tmp_path)
    assert first.exit_code == 0, first.output
    assert first.output.count(" generated (") == 2
    owner = (tmp_path / "OWNER" / "password").read_text()
    assert len(owner.strip()) == 32 and owner != (tmp_path / "APP" / "password").read_text()
    assert stat.S_IMODE((tmp_path / "OWNER" / "password").stat().st_mode) == 0o444
    again = _passwords(tmp_path)
    assert again.exit_code == 0 and again.output.count(" kept (") == 2
    assert (tmp_path / "OWNER" / "password").read_text() == owner


def test_a_password_set_in_the_environment_is_written_and_checked(tmp_path):
    chosen = _passwords(tmp_path, {"APP": "chosen-password-0123456789"})
    assert chosen.exit_code == 0, chosen.output
    assert (tmp_path / "APP" / "password").read_text() == "chosen-password-0123456789\n"
    bad = _passwords(tmp_path, {"APP": "has space in it, 1234567"})
    assert bad.exit_code == 1 and "invalid configuration: APP must be 16-128" in bad.output
