"""Configuration from environment variables only, validated once at start-up.

Every setting has a safe default except the two connection URLs. A bad value
stops the process with a message that names the variable, so a typo in
`.env` is found at `docker compose up`, not by the first user request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TypeVar
from urllib.parse import urlsplit

STRATEGIES = ("none", "cache-aside", "swr")
T = TypeVar("T", int, float)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


def _bounded(env: Mapping[str, str], name: str, default: T, low: T, high: T,
             parse: Callable[[str], T], kind: str) -> T:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def read_integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _bounded(env, name, default, low, high, int, "an integer")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _bounded(env, name, default, low, high, float, "a number")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required (e.g. {schemes[0]}://host/...)")
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(
            f"{name} must be a URL with scheme {' or '.join(schemes)} and a host; "
            f"got scheme {parts.scheme!r}"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """The application's settings. Build with :meth:`from_env`."""

    database_url: str
    redis_url: str
    cache_strategy: str = "swr"
    cache_ttl_seconds: int = 10
    cache_grace_seconds: int = 300
    cache_jitter_ratio: float = 0.1
    cache_namespace: str = "lab"
    cache_lock_wait_seconds: float = 15.0
    xfetch_beta: float = 1.0
    local_cache_size: int = 256
    refresh_threads: int = 4
    redis_socket_timeout_ms: int = 75
    redis_connect_timeout_ms: int = 100
    redis_max_connections: int = 50
    breaker_failure_threshold: int = 3
    breaker_cooldown_seconds: float = 5.0
    db_connect_timeout_seconds: int = 3
    db_statement_timeout_ms: int = 30_000
    db_pool_size: int = 20
    db_pool_wait_seconds: float = 10.0
    slow_query_seconds: float | None = None

    @property
    def lock_ttl_ms(self) -> int:
        """The single-flight lock outlives the longest query the database allows."""
        return self.db_statement_timeout_ms + 5_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        namespace = env.get("CACHE_NAMESPACE", "").strip() or "lab"
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", namespace):
            raise ConfigError(
                "CACHE_NAMESPACE must be 1-32 characters of a-z, 0-9, '_' or '-', "
                f"starting with a letter; got {namespace!r}"
            )
        settings = cls(
            database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres")),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss")),
            cache_strategy=_choice(env, "CACHE_STRATEGY", "swr", STRATEGIES),
            cache_ttl_seconds=read_integer(env, "CACHE_TTL_SECONDS", 10, 1, 86_400),
            cache_grace_seconds=read_integer(env, "CACHE_GRACE_SECONDS", 300, 0, 86_400),
            cache_jitter_ratio=_number(env, "CACHE_JITTER_RATIO", 0.1, 0.0, 0.5),
            cache_namespace=namespace,
            cache_lock_wait_seconds=_number(env, "CACHE_LOCK_WAIT_SECONDS", 15.0, 0.1, 300.0),
            xfetch_beta=_number(env, "XFETCH_BETA", 1.0, 0.0, 10.0),
            local_cache_size=read_integer(env, "LOCAL_CACHE_SIZE", 256, 1, 100_000),
            refresh_threads=read_integer(env, "CACHE_REFRESH_THREADS", 4, 1, 64),
            redis_socket_timeout_ms=read_integer(env, "REDIS_SOCKET_TIMEOUT_MS", 75, 1, 10_000),
            redis_connect_timeout_ms=read_integer(env, "REDIS_CONNECT_TIMEOUT_MS", 100, 1, 10_000),
            redis_max_connections=read_integer(env, "REDIS_MAX_CONNECTIONS", 50, 1, 10_000),
            breaker_failure_threshold=read_integer(env, "BREAKER_FAILURE_THRESHOLD", 3, 1, 1_000),
            breaker_cooldown_seconds=_number(env, "BREAKER_COOLDOWN_SECONDS", 5.0, 0.1, 600.0),
            db_connect_timeout_seconds=read_integer(env, "DB_CONNECT_TIMEOUT_SECONDS", 3, 1, 60),
            db_statement_timeout_ms=read_integer(env, "DB_STATEMENT_TIMEOUT_MS", 30_000, 100, 600_000),
            db_pool_size=read_integer(env, "DB_POOL_SIZE", 20, 1, 1_000),
            db_pool_wait_seconds=_number(env, "DB_POOL_WAIT_SECONDS", 10.0, 0.0, 300.0),
            slow_query_seconds=_number(env, "SLOW_QUERY_SECONDS", -1.0, 0.0, 300.0)
            if env.get("SLOW_QUERY_SECONDS", "").strip() else None,
        )
        if (settings.slow_query_seconds is not None
                and settings.db_statement_timeout_ms <= settings.slow_query_seconds * 1000):
            raise ConfigError(
                f"DB_STATEMENT_TIMEOUT_MS ({settings.db_statement_timeout_ms}) must exceed "
                f"SLOW_QUERY_SECONDS ({settings.slow_query_seconds:g} s), or every query times out"
            )
        return settings

    def public(self) -> dict[str, object]:
        """Settings safe to show on a page: everything but the connection URLs."""
        hidden = {"database_url", "redis_url"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
