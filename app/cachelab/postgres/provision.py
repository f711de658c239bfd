"""Prepare a database for the lab, idempotently: ``cachelab db-init``.

Runs with the database owner's URL (locally the postgres superuser, on RDS
the master user, which is *not* a superuser) and, in one transaction:

1. applies every ``postgres-init/*.sql`` file in name order (the postgres
   container runs the same files on its first start; RDS runs none);
2. creates or updates the app's own LOGIN role (``APP_DB_USER``, password
   ``APP_DB_PASSWORD``) and makes it a member of the NOLOGIN group role
   ``cachelab_runtime``, to which the SQL files grant what the app needs;
3. with ``MONITOR_DB_PASSWORD`` (or ``_FILE``) set, creates or updates the
   LOGIN role ``cachelab_monitor``, a member of PostgreSQL's own ``pg_monitor``
   (statistics views, ``pg_stat_statements``; no table data): the local
   postgres exporter's, so Prometheus never logs in as the owner;
4. upserts the lab's settings (``SLOW_QUERY_SECONDS``, ``ITEM_COUNT``,
   ``ITEM_PAYLOAD_BYTES``) into ``lab_settings`` as soon as a file has created
   that table, so the files after it (the items' seeding) see them.

The password is sent as a SCRAM-SHA-256 verifier computed on the client
(libpq's ``PQencryptPasswordConn``), so the clear text never appears in a
statement the server might log (RDS logs DDL here: ``log_statement = ddl``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import encrypt_password

from ..config import ConfigError, read_secret

log = logging.getLogger(__name__)
DEFAULT_DIR = "/srv/postgres-init"
RUNTIME_GROUP = "cachelab_runtime"
DEFAULT_APP_USER = "cachelab_app"
MONITOR_USER = "cachelab_monitor"
MONITOR_GROUP = "pg_monitor"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# libpq messages that no amount of waiting fixes: fail at once, with the reason.
_PERMANENT = (
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "SSL off",
    "server does not support SSL",
)


class DatabaseNotReady(Exception):
    """The database did not accept a connection before the deadline (worth retrying)."""


@dataclass(frozen=True)
class AppRole:
    user: str
    password: str


def _password(env: dict[str, str], name: str) -> str | None:
    try:
        password = read_secret(env, name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if password is not None and len(password) < 16:
        raise ValueError(f"{name} must be at least 16 characters")
    return password


def app_role_from_env(env: dict[str, str]) -> AppRole:
    """APP_DB_USER (default cachelab_app) and APP_DB_PASSWORD (or the file
    APP_DB_PASSWORD_FILE names); ValueError names the bad one."""
    user = env.get("APP_DB_USER", "").strip() or DEFAULT_APP_USER
    if not _ROLE_NAME.match(user) or user in (RUNTIME_GROUP, MONITOR_USER):
        raise ValueError(
            f"APP_DB_USER must be a lower-case role name other than {RUNTIME_GROUP} "
            f"and {MONITOR_USER}, got {user!r}"
        )
    password = _password(env, "APP_DB_PASSWORD")
    if password is None:
        raise ValueError(
            "APP_DB_PASSWORD or APP_DB_PASSWORD_FILE is required (at least 16 characters)"
        )
    return AppRole(user, password)


def monitor_role_from_env(env: dict[str, str]) -> AppRole | None:
    """The exporter's role, when MONITOR_DB_PASSWORD (or _FILE) is set; else None."""
    password = _password(env, "MONITOR_DB_PASSWORD")
    return None if password is None else AppRole(MONITOR_USER, password)


def apply(
    database_url: str,
    directory: Path,
    wait_seconds: float,
    lab_settings: dict[str, str],
    app_role: AppRole,
    monitor_role: AppRole | None = None,
) -> list[str]:
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
                cur.execute("SELECT current_user")
                (owner,) = cur.fetchone()
                if owner == app_role.user:
                    raise ValueError(
                        f"APP_DB_USER ({app_role.user}) must not be the database owner"
                    )
                pending = dict(lab_settings)
                for path in files:
                    cur.execute(path.read_text())
                    applied.append(path.name)
                    if pending and _has_settings_table(cur):
                        _store_settings(cur, pending)
                        pending = {}
                _ensure_login_role(conn, cur, app_role, RUNTIME_GROUP)
                if monitor_role is not None:
                    _ensure_login_role(conn, cur, monitor_role, MONITOR_GROUP)
                    # PUBLIC has no CONNECT here (01-slow-version.sql).
                    cur.execute("SELECT current_database()")
                    cur.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                            sql.Identifier(cur.fetchone()[0]), sql.Identifier(monitor_role.user)
                        )
                    )
    finally:
        conn.close()
    return applied


def _has_settings_table(cur) -> bool:
    cur.execute("SELECT to_regclass('lab_settings') IS NOT NULL")
    return bool(cur.fetchone()[0])


def _store_settings(cur, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        cur.execute(
            "INSERT INTO lab_settings (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            (name, value),
        )


def _ensure_login_role(conn, cur, role: AppRole, group: str) -> None:
    verifier = encrypt_password(role.password, role.user, conn, "scram-sha-256")
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.user,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    # No SUPERUSER/CREATEDB/CREATEROLE/BYPASSRLS: the defaults of CREATE ROLE,
    # and reset explicitly for a role that existed before.
    cur.execute(
        sql.SQL("{} ROLE {} LOGIN NOCREATEDB NOCREATEROLE INHERIT PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role.user), sql.Literal(verifier)
        )
    )
    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role.user)))


def _connect(database_url: str, wait_seconds: float):
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return psycopg2.connect(
                database_url, connect_timeout=3, application_name="cachelab-db-init"
            )
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if any(marker in str(exc) for marker in _PERMANENT):
                raise
            if time.monotonic() >= deadline:
                raise DatabaseNotReady(f"no connection within {wait_seconds:g}s: {reason}") from exc
            log.info("waiting for the database: %s", reason)
            time.sleep(1)


def directory_from_env() -> Path:
    return Path(os.environ.get("DB_INIT_DIR", DEFAULT_DIR))
