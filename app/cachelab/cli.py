"""``cachelab``: the app image's command line (db-init, cache purge, config check)."""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import click
import redis

from .config import ConfigError, Settings, database_url, read_integer, read_number


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc


@click.group()
def main() -> None:
    """Caching lab command line."""


@main.command("check-config")
def check_config() -> None:
    """Validate the environment and print the effective settings (no secrets);
    when the cache server answers, check that REDIS_CLUSTER matches it."""
    from .engine.cluster import check_mode

    settings = _settings()
    try:
        mode = check_mode(settings)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    for name, value in settings.public().items():
        click.echo(f"{name}={value}")
    click.echo(f"cache_server_mode={mode or 'unknown (not reachable)'}")


@main.command("db-init")
@click.option(
    "--wait",
    "wait_seconds",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the database to accept connections.",
)
@click.option(
    "--lock-timeout-ms",
    default=1000,
    show_default=True,
    type=click.IntRange(10, 60_000),
    help="Give up a table lock not granted within this time (readers wait at most this long).",
)
@click.option(
    "--lock-attempts",
    default=60,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Attempts before a lock that stays taken fails the run (exit 75).",
)
def db_init(wait_seconds: float, lock_timeout_ms: int, lock_attempts: int) -> None:
    """Prepare DATABASE_URL's database (idempotent); run it as the database owner.

    Connects with DATABASE_URL, or on AWS with the RDS master secret
    (DB_OWNER_SECRET) and DB_HOST/DB_PORT/DB_NAME over TLS verified against
    DB_CA_URL. Applies postgres-init/*.sql in order (skipping a file applied before,
    unchanged), creates or updates the app's login role APP_DB_USER (password
    APP_DB_PASSWORD) as a member of cachelab_runtime (and cachelab_monitor in
    pg_monitor when MONITOR_DB_PASSWORD is set), and stores SLOW_QUERY_SECONDS,
    when set, in lab_settings. Each password, and the owner's (DATABASE_PASSWORD),
    may come from a file instead: NAME_FILE. Exit status 75 means the database was
    not reachable in time or a table stayed locked (worth retrying); 1 is any
    other failure, printed with its reason.
    """
    from .postgres import provision

    try:
        if os.environ.get("DATABASE_URL", "").strip():
            url = database_url(os.environ)
        else:  # on AWS: the RDS master secret and the endpoint's parts (the db-init task)
            url = provision.owner_url_from_env(dict(os.environ)) or ""
        if not url:
            raise click.ClickException(
                "invalid configuration: DATABASE_URL (the database owner's URL) is required"
            )
        role = provision.app_role_from_env(dict(os.environ))
        monitor = provision.monitor_role_from_env(dict(os.environ))
    except ValueError as exc:  # ConfigError included
        raise click.ClickException(f"invalid configuration: {exc}") from None
    try:
        lab_settings = _lab_settings(os.environ)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    try:
        applied = provision.apply(
            url,
            provision.directory_from_env(),
            wait_seconds,
            lab_settings,
            role,
            monitor,
            lock_timeout_ms=lock_timeout_ms,
            lock_attempts=lock_attempts,
        )
    except provision.DatabaseNotReady as exc:
        click.echo(f"Error: db-init failed: {exc}", err=True)
        sys.exit(75)
    except Exception as exc:  # report, never dump a traceback with the URL in it
        raise click.ClickException(
            f"db-init failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        ) from exc
    click.echo(
        f"db-init: applied {', '.join(applied) or 'nothing (no file changed)'}; "
        f"app role {role.user} in {provision.RUNTIME_GROUP}"
        + (f"; {monitor.user} in {provision.MONITOR_GROUP}" if monitor else "")
        + "".join(f"; {name}={value}" for name, value in lab_settings.items())
    )


def _lab_settings(env) -> dict[str, str]:
    """The database's own settings (table lab_settings), from the variables that are set."""
    settings: dict[str, str] = {}
    if env.get("SLOW_QUERY_SECONDS", "").strip():
        delay = read_number(env, "SLOW_QUERY_SECONDS", 10.0, 0.0, 300.0)
        settings["slow_query_seconds"] = str(delay)
    for name, key, low, high in (
        ("ITEM_COUNT", "item_count", 1, 100_000),
        ("ITEM_PAYLOAD_BYTES", "item_payload_bytes", 1, 65_536),
    ):
        if env.get(name, "").strip():
            settings[key] = str(read_integer(env, name, 0, low, high))
    log = env.get("SLOW_CALL_LOG", "").strip()
    if log:
        if log not in ("on", "off"):
            raise ConfigError(f"SLOW_CALL_LOG must be 'on' or 'off'; got {log!r}")
        settings["slow_call_log"] = log
    return settings


_PASSWORD = re.compile(r"[A-Za-z0-9._~-]{16,128}")


@main.command("passwords")
@click.argument(
    "targets",
    nargs=-1,
    required=True,
    metavar="VARIABLE=DIRECTORY...",
)
def passwords(targets: tuple[str, ...]) -> None:
    """Write each VARIABLE's password into DIRECTORY/password, once.

    compose.yaml's one-shot ``passwords`` service runs this before anything
    else, with one volume per password, so that a bare ``docker compose up``
    needs no .env and no password is in the repository. The value is VARIABLE
    when it is set in the environment (e.g. from .env); otherwise a file that
    is already there is kept (the data volume holds the first password), and
    a missing one gets 32 random hex digits. Files are 0444 in directories
    that only the containers needing that password mount.
    """
    for target in targets:
        variable, sep, directory = target.partition("=")
        if not sep or not variable or not directory:
            raise click.UsageError(f"{target!r} is not VARIABLE=DIRECTORY")
        path = Path(directory) / "password"
        chosen = os.environ.get(variable, "").strip()
        if chosen and not _PASSWORD.fullmatch(chosen):
            raise click.ClickException(
                f"invalid configuration: {variable} must be 16-128 characters of letters, "
                "digits or ._~- (it goes into database URLs)"
            )
        if not chosen and path.is_file() and path.read_text().strip():
            click.echo(f"passwords: {variable} kept ({path})")
            continue
        value = chosen or secrets.token_hex(16)
        staged = path.with_name(".password.new")
        staged.unlink(missing_ok=True)
        staged.write_text(value + "\n")
        staged.chmod(0o444)
        staged.replace(path)
        origin = "from the environment" if chosen else "generated"
        click.echo(f"passwords: {variable} {origin} ({path})")


@main.group()
def cache() -> None:
    """Operate on the cache namespace."""


@cache.command("purge")
def cache_purge() -> None:
    """Delete every entry and lock of this namespace and format version (SCAN + UNLINK)."""
    from .engine.cluster import ClusterStore
    from .engine.keys import namespace_pattern
    from .engine.store import CacheUnavailable, RedisStore, make_client

    settings = _settings()
    pattern = namespace_pattern(settings.cache_namespace)
    try:
        if settings.redis_cluster:  # every primary; one that does not answer fails the purge
            store: RedisStore = ClusterStore(settings, timeout_ms=2000)
            store.ping()
        else:
            store = RedisStore(settings, make_client(settings, timeout_ms=2000))
        deleted = store.purge(pattern)
    except (CacheUnavailable, redis.exceptions.RedisError, OSError) as exc:
        raise click.ClickException(f"cache purge failed: {type(exc).__name__}: {exc}") from exc
    click.echo(f"cache purge: deleted {deleted} keys matching {pattern}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
