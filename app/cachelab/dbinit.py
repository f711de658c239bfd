"""Apply postgres-init/*.sql to any DATABASE_URL, idempotently.

The postgres container runs the same files from /docker-entrypoint-initdb.d on
its first start; RDS runs no init scripts, so the app image carries them and
``cachelab db-init`` applies them (Compose runs it as a one-shot service, so
both paths stay identical).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

log = logging.getLogger(__name__)
DEFAULT_DIR = "/srv/postgres-init"


def apply(database_url: str, directory: Path, wait_seconds: float,
          slow_query_seconds: float | None) -> list[str]:
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no *.sql files in {directory}")
    conn = _connect(database_url, wait_seconds)
    applied = []
    try:
        with conn:
            with conn.cursor() as cur:
                # Serialise concurrent db-init runs (several instances starting at once).
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('cachelab-db-init'))")
                for path in files:
                    cur.execute(path.read_text())
                    applied.append(path.name)
                if slow_query_seconds is not None:
                    cur.execute("SELECT current_database()")
                    (dbname,) = cur.fetchone()
                    cur.execute(
                        sql.SQL("ALTER DATABASE {} SET lab.slow_query_seconds = {}").format(
                            sql.Identifier(dbname), sql.Literal(str(slow_query_seconds))
                        )
                    )
    finally:
        conn.close()
    return applied


def _connect(database_url: str, wait_seconds: float):
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return psycopg2.connect(database_url, connect_timeout=3, application_name="cachelab-db-init")
        except psycopg2.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("waiting for the database: %s", str(exc).strip().splitlines()[0])
            time.sleep(1)


def directory_from_env() -> Path:
    return Path(os.environ.get("DB_INIT_DIR", DEFAULT_DIR))
