"""What the app's database role may and may not do (local stack and the RDS stand-in)."""

from __future__ import annotations

import psycopg2
import psycopg2.errors

RUNTIME_GROUP = "cachelab_runtime"


def prepare_foreign_objects(owner_conn) -> None:
    """Objects the app has no business reading: a table in public and one in another schema."""
    owner_conn.autocommit = True
    with owner_conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS public.owner_private (secret text)")
        cur.execute("CREATE SCHEMA IF NOT EXISTS other_schema")
        cur.execute("CREATE TABLE IF NOT EXISTS other_schema.private (secret text)")


def _refused(conn, statement: str) -> str | None:
    """None when PostgreSQL refused ``statement`` for lack of privilege, else what happened."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        return f"allowed: {statement}"
    except psycopg2.errors.InsufficientPrivilege:
        return None
    except psycopg2.Error as exc:
        return f"{statement}: {type(exc).__name__}: {exc}".strip()
    finally:
        conn.rollback()


def check_app_role(app_conn, app_user: str) -> list[str]:
    """Every way the app role exceeds what it needs, as readable lines (empty = least privilege)."""
    problems: list[str] = []
    with app_conn.cursor() as cur:
        cur.execute(
            "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        )
        user, superuser, createrole, createdb, bypassrls = cur.fetchone()
        if user != app_user:
            problems.append(f"connected as {user}, expected {app_user}")
        if superuser or createrole or createdb or bypassrls:
            problems.append(f"{user} has SUPERUSER/CREATEROLE/CREATEDB/BYPASSRLS")
        cur.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (RUNTIME_GROUP,))
        if not cur.fetchone()[0]:
            problems.append(f"{user} is not a member of {RUNTIME_GROUP}")
        cur.execute(
            "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
        )
        (db_owner,) = cur.fetchone()
        if db_owner == user:
            problems.append(f"{user} owns the database")
        cur.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE pg_get_userbyid(c.relowner) = current_user"
        )
        if cur.fetchone()[0]:
            problems.append(f"{user} owns relations")
        cur.execute("SELECT count(*) FROM pg_proc WHERE pg_get_userbyid(proowner) = current_user")
        if cur.fetchone()[0]:
            problems.append(f"{user} owns functions")
        # What it needs: the settings table and the function.
        cur.execute(
            "SELECT has_function_privilege('slow_version()', 'EXECUTE'), "
            "has_table_privilege('lab_settings', 'SELECT')"
        )
        if cur.fetchone() != (True, True):
            problems.append(f"{user} cannot run slow_version() or read lab_settings")
    app_conn.rollback()
    for statement in (
        "CREATE TABLE public.app_made (x int)",
        "CREATE TEMP TABLE app_temp (x int)",
        "CREATE FUNCTION public.app_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA app_schema",
        "SELECT * FROM public.owner_private",
        "SELECT * FROM other_schema.private",
        "UPDATE lab_settings SET value = '0'",
        "INSERT INTO lab_settings VALUES ('x', 'y')",
        "ALTER FUNCTION slow_version() OWNER TO CURRENT_USER",
    ):
        outcome = _refused(app_conn, statement)
        if outcome:
            problems.append(outcome)
    return problems
