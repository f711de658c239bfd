"""`cachelab db-init` against a real PostgreSQL while the app's slow reads run.

On AWS db-init runs once per deploy (terraform/deploy.sh), while the app
serves: re-applying the trigger DDL of postgres-init/02-items.sql takes an
AccessExclusiveLock on ``items``, which waits behind every running
``slow_item`` -- and every later read of ``items`` queues behind that wait.
db-init therefore skips a file it has applied before, unchanged, with the same
settings, and when it must apply one it gives up a lock it cannot have within
``DB_INIT_LOCK_TIMEOUT_MS`` and tries again later.

Measured here on PostgreSQL (POSTGRES_IMAGE): the time a plain ``SELECT`` on
``items`` takes while db-init runs beside a 4 s ``slow_item``.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest

from loadtest.stack import wait_until
from tests.aws.standins import ROOT, Janitor, alnum, image, published_port

pytestmark = pytest.mark.slow

SLOW_SECONDS = 4.0
LOCK_TIMEOUT_MS = 300
SQL_DIR = ROOT / "postgres-init"


@pytest.fixture(scope="module")
def postgres(docker_available):
    import docker

    janitor = Janitor(docker.from_env())
    password = alnum(24)
    try:
        container = janitor.container(
            image=image("POSTGRES_IMAGE"),
            name=f"aws-dbinit-{secrets.token_hex(3)}",
            environment={
                "POSTGRES_PASSWORD": password,
                "POSTGRES_USER": "lab",
                "POSTGRES_DB": "lab",
            },
            command=["postgres", "-c", "track_functions=pl"],
            ports={"5432/tcp": ("127.0.0.1", None)},
        )
        port = published_port(container, "5432/tcp")
        url = f"postgresql://lab:{password}@127.0.0.1:{port}/lab"

        def answers() -> bool:
            import psycopg2

            psycopg2.connect(url, connect_timeout=2).close()
            return True

        wait_until(answers, timeout=90, message="PostgreSQL to accept connections")
        yield url
    finally:
        janitor.cleanup()


def _apply(url: str, directory: Path = SQL_DIR, settings: dict | None = None):
    from cachelab.postgres import provision

    return provision.apply(
        url,
        directory,
        wait_seconds=30,
        lab_settings={"slow_query_seconds": str(SLOW_SECONDS), **(settings or {})},
        app_role=provision.AppRole("cachelab_app", alnum(24)),
        lock_timeout_ms=LOCK_TIMEOUT_MS,
        lock_attempts=40,
    )


def _slow_item_in_background(url: str) -> threading.Thread:
    import psycopg2

    started = threading.Event()

    def run() -> None:
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                started.set()
                cur.execute("SELECT * FROM slow_item(1)")
                cur.fetchall()
            conn.commit()
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread


def _wait_for_the_slow_item(url: str) -> None:
    import psycopg2

    def sleeping() -> bool:
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow_item(1)%' "
                    "AND wait_event = 'PgSleep'"
                )
                row = cur.fetchone()
                return row is not None and row[0] >= 1
        finally:
            conn.close()

    wait_until(sleeping, timeout=10, interval=0.05, message="slow_item to be sleeping")


def _plain_select_seconds(url: str, during: threading.Thread) -> list[float]:
    """Time plain reads of ``items`` (one connection each) while ``during`` runs."""
    import psycopg2

    timings = []
    deadline = time.monotonic() + 2 * SLOW_SECONDS
    while during.is_alive() and time.monotonic() < deadline:
        conn = psycopg2.connect(url, options="-c statement_timeout=20000")
        try:
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("SELECT payload FROM items WHERE id = 2")
                cur.fetchone()
            timings.append(time.perf_counter() - started)
        finally:
            conn.close()
        time.sleep(0.05)
    return timings


def _db_init_in_background(url: str, directory: Path = SQL_DIR):
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["applied"] = _apply(url, directory)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_an_unchanged_db_init_takes_no_lock_on_items(postgres):
    assert _apply(postgres)  # the first run applies every file
    slow = _slow_item_in_background(postgres)
    _wait_for_the_slow_item(postgres)
    init, outcome = _db_init_in_background(postgres)
    timings = _plain_select_seconds(postgres, init)
    init.join(3 * SLOW_SECONDS)
    slow.join(3 * SLOW_SECONDS)
    assert "error" not in outcome, outcome
    # A plain read never waits behind db-init (it took no lock on items).
    assert timings and max(timings) < 0.5, timings
    assert outcome["applied"] == [], "unchanged files are skipped"
    assert outcome["seconds"] < SLOW_SECONDS / 2, outcome


def test_a_changed_file_waits_for_the_lock_without_stalling_readers(postgres, tmp_path):
    changed = tmp_path / "sql"
    shutil.copytree(SQL_DIR, changed)
    items = changed / "02-items.sql"
    items.write_text(items.read_text() + "\n-- a change: the file is applied again\n")
    slow = _slow_item_in_background(postgres)
    _wait_for_the_slow_item(postgres)
    init, outcome = _db_init_in_background(postgres, changed)
    timings = _plain_select_seconds(postgres, init)
    init.join(4 * SLOW_SECONDS)
    slow.join(3 * SLOW_SECONDS)
    assert "error" not in outcome, outcome
    assert "02-items.sql" in outcome["applied"], outcome
    # Each attempt holds readers back for at most the lock timeout.
    assert timings, "no read completed while db-init ran"
    ordered = sorted(timings)
    assert ordered[len(ordered) // 2] < 0.2, timings
    assert max(timings) < LOCK_TIMEOUT_MS / 1000 + 1.0, timings
