"""Prepare a database for the lab, idempotently: ``cachelab db-init``.

Runs with the database owner's URL (locally the postgres superuser, on RDS
the master user, which is *not* a superuser) and, in one transaction:

1. applies every ``postgres-init/*.sql`` file in name order (the postgres
   container runs the same files on its first start; RDS runs none), except
   a file applied before with the same text and the same settings (see
   below): its DDL is skipped, so a run that changes nothing takes no lock;
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

db-init runs while the app serves (on AWS once per deploy). Changing a
trigger takes an AccessExclusiveLock on its table, which waits behind every
running query -- and every later query of that table queues behind the wait.
So each attempt sets ``lock_timeout``: a lock not granted within it aborts the
attempt (readers are held back at most that long), and the whole transaction
is tried again after a pause, up to ``lock_attempts`` times.

Which files ran is recorded in ``cachelab_schema`` (file, sha-256 of its text
and of the settings it reads when applied). A file names those settings in a
header line ``-- db-init: reapply when item_count, item_payload_bytes
change``; other settings (read by functions at run time) do not make a file
run again.

The password is sent as a SCRAM-SHA-256 verifier computed on the client
(libpq's ``PQencryptPasswordConn``), so the clear text never appears in a
statement the server might log (RDS logs DDL here: ``log_statement = ddl``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.errors
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
_REAPPLY_WHEN = re.compile(r"^--\s*db-init:\s*reapply when (.+?)\s+changes?\s*$", re.MULTILINE)
DEFAULT_LOCK_TIMEOUT_MS = 1000
DEFAULT_LOCK_ATTEMPTS = 60

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


class DatabaseBusy(DatabaseNotReady):
    """A lock db-init needs stayed taken through every attempt (worth retrying later)."""


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


def owner_url_from_env(env: dict[str, str]) -> str | None:
    """The owner's URL on AWS, where the db-init task gets the parts, not a URL.

    ECS hands the task the RDS master secret's current version as
    ``DB_OWNER_SECRET`` (JSON with ``username`` and ``password``); the endpoint
    comes as ``DB_HOST``, ``DB_PORT`` and ``DB_NAME``, and TLS is verified
    (``verify-full``) against the bundle at ``DB_CA_URL`` (RDS's trust store),
    downloaded to a temporary file. None when ``DB_OWNER_SECRET`` is not set.
    ValueError names what is missing or malformed.
    """
    raw = env.get("DB_OWNER_SECRET", "").strip()
    if not raw:
        return None
    try:
        secret = json.loads(raw)
        user, password = str(secret["username"]), str(secret["password"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            "DB_OWNER_SECRET must be the RDS master secret: JSON with username and password"
        ) from None
    host = env.get("DB_HOST", "").strip()
    port = env.get("DB_PORT", "").strip() or "5432"
    name = env.get("DB_NAME", "").strip() or "lab"
    ca_url = env.get("DB_CA_URL", "").strip()
    if not host or not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise ValueError(f"DB_HOST must be the database's host name, got {host!r}")
    if not port.isdigit():
        raise ValueError(f"DB_PORT must be a port number, got {port!r}")
    if not ca_url:
        raise ValueError("DB_CA_URL (the CA bundle that verifies the database) is required")
    ca_file = Path(tempfile.mkdtemp(prefix="cachelab-db-init-")) / "db-ca.pem"
    try:
        with urllib.request.urlopen(ca_url, timeout=10) as response:  # noqa: S310 - https or file
            ca_file.write_bytes(response.read())
    except OSError as exc:
        raise ValueError(f"cannot download DB_CA_URL {ca_url}: {exc}") from None
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(name, safe='')}?sslmode=verify-full&sslrootcert={quote(str(ca_file))}"
    )


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
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    lock_attempts: int = DEFAULT_LOCK_ATTEMPTS,
) -> list[str]:
    """Apply what changed; return the names of the files applied (empty: none)."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no *.sql files in {directory}")
    conn = _connect(database_url, wait_seconds)
    try:
        for attempt in range(1, lock_attempts + 1):
            try:
                with conn:
                    with conn.cursor() as cur:
                        return _apply_once(
                            conn, cur, files, lab_settings, app_role, monitor_role, lock_timeout_ms
                        )
            except psycopg2.errors.LockNotAvailable as exc:
                if attempt == lock_attempts:
                    raise DatabaseBusy(
                        f"a lock stayed taken through {lock_attempts} attempts of "
                        f"{lock_timeout_ms} ms: {str(exc).strip()[:200]}"
                    ) from exc
                pause = min(0.1 * attempt, 2.0)
                log.info("db-init: a lock is taken (%s); again in %.1fs", exc.pgcode, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        conn.close()


def _apply_once(
    conn,
    cur,
    files: list[Path],
    lab_settings: dict[str, str],
    role: AppRole,
    monitor_role: AppRole | None,
    lock_timeout_ms: int,
) -> list[str]:
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",))
    # Serialise concurrent db-init runs.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('cachelab-db-init'))")
    cur.execute("SELECT current_user")
    (owner,) = cur.fetchone()
    if owner == role.user:
        raise ValueError(f"APP_DB_USER ({role.user}) must not be the database owner")
    recorded = _recorded_digests(cur)
    pending = dict(lab_settings)
    applied = []
    for path in files:
        if pending and _has_settings_table(cur):
            _store_settings(cur, pending)
            pending = {}
        text = path.read_text()
        digest = file_digest(text, lab_settings)
        if recorded.get(path.name) == digest:
            continue
        cur.execute(text)
        cur.execute(
            "INSERT INTO cachelab_schema (file, digest) VALUES (%s, %s) "
            "ON CONFLICT (file) DO UPDATE SET digest = EXCLUDED.digest, applied_at = now()",
            (path.name, digest),
        )
        applied.append(path.name)
    if pending and _has_settings_table(cur):
        _store_settings(cur, pending)
    _ensure_login_role(conn, cur, role, RUNTIME_GROUP)
    if monitor_role is not None:
        _ensure_login_role(conn, cur, monitor_role, MONITOR_GROUP)
        # PUBLIC has no CONNECT here (01-slow-version.sql).
        cur.execute("SELECT current_database()")
        cur.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(cur.fetchone()[0]), sql.Identifier(monitor_role.user)
            )
        )
    return applied


def file_digest(text: str, lab_settings: dict[str, str]) -> str:
    """sha-256 of a file's text and of the settings its header says it reads when applied."""
    names: set[str] = set()
    for listed in _REAPPLY_WHEN.findall(text):
        names |= {name.strip() for name in listed.split(",") if name.strip()}
    used = {name: lab_settings.get(name) for name in sorted(names)}
    return hashlib.sha256((text + "\0" + json.dumps(used, sort_keys=True)).encode()).hexdigest()


def _recorded_digests(cur) -> dict[str, str]:
    cur.execute("SELECT to_regclass('cachelab_schema') IS NOT NULL")
    if not cur.fetchone()[0]:
        cur.execute(
            "CREATE TABLE cachelab_schema (file text PRIMARY KEY, digest text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("REVOKE ALL ON cachelab_schema FROM PUBLIC")
        return {}
    cur.execute("SELECT file, digest FROM cachelab_schema")
    return dict(cur.fetchall())


def _has_settings_table(cur) -> bool:
    cur.execute("SELECT to_regclass('lab_settings') IS NOT NULL")
    return bool(cur.fetchone()[0])


def _store_settings(cur, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        cur.execute(
            "INSERT INTO lab_settings (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value "
            "WHERE lab_settings.value IS DISTINCT FROM EXCLUDED.value",
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
