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
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

# The one list of strategies: the app validates CACHE_STRATEGY against it, the
# metrics pre-create their labels from it, and the benchmarks (loadtest) run it.
# ``edge`` is ``two-tier`` behind Nginx's own micro-cache (nginx/, rendered from
# the same CACHE_STRATEGY): hits Nginx answers never reach the app.
STRATEGIES = ("none", "cache-aside", "swr", "two-tier", "edge")
MEMORY_TIER_STRATEGIES = ("two-tier", "edge")
INVALIDATION_MODES = ("ttl", "delete", "write-through", "notify")
TRACKING_CHOICES = ("auto", "off")
CLUSTER_CHOICES = ("off", "on")
T = TypeVar("T", int, float)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


def _bounded(
    env: Mapping[str, str],
    name: str,
    default: T,
    low: T,
    high: T,
    parse: Callable[[str], T],
    kind: str,
) -> T:
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


def read_number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float
) -> float:
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


def _optional_url(env: Mapping[str, str], name: str) -> str | None:
    if not env.get(name, "").strip():
        return None
    return _url(env, name, ("http", "https")).rstrip("/")


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """``NAME``, or the contents of the file ``NAME_FILE`` names (the ``*_FILE``
    convention of the official database images), stripped of its line end.

    Compose hands generated passwords to the containers as files (compose.yaml's
    one-shot ``passwords`` service writes them into volumes), so no password has
    to be in the environment, in ``.env`` or in the repository.
    """
    file_variable = f"{name}_FILE"
    path = env.get(file_variable, "").strip()
    value = env.get(name, "")
    if not path:
        return value or None
    if value:
        raise ConfigError(f"set {name} or {file_variable}, not both")
    try:
        text = Path(path).read_text().strip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{file_variable}: cannot read {path} ({exc.strerror})") from None
    if not text:
        raise ConfigError(f"{file_variable}: {path} is empty")
    return text


def database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL, with the password from DATABASE_PASSWORD(_FILE) when one is set."""
    url = _url(env, "DATABASE_URL", ("postgresql", "postgres"))
    password = read_secret(env, "DATABASE_PASSWORD")
    if password is None:
        return url
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(
            "DATABASE_URL already holds a password: drop it from the URL or unset "
            "DATABASE_PASSWORD / DATABASE_PASSWORD_FILE"
        )
    if not parts.username:
        raise ConfigError("DATABASE_URL needs a user name when DATABASE_PASSWORD(_FILE) is set")
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    """The application's settings. Build with :meth:`from_env`."""

    database_url: str
    redis_url: str
    cache_strategy: str = "two-tier"
    # edge: how long Nginx keeps its copy fresh (the app stamps the expiry).
    edge_cache_seconds: int = 1
    cache_ttl_seconds: int = 10
    cache_grace_seconds: int = 300
    cache_jitter_ratio: float = 0.1
    cache_namespace: str = "lab"
    cache_lock_wait_seconds: float = 15.0
    cache_lock_lease_seconds: float = 5.0
    xfetch_beta: float = 1.0
    local_cache_size: int = 1024
    local_cache_bytes: int = 64 * 1024 * 1024
    negative_ttl_seconds: float = 5.0
    refresh_threads: int = 4
    refresh_queue: int = 256
    fill_slots: int = 16
    miss_slots: int = 32
    follower_slots: int = 80
    cache_tracking: str = "auto"
    memory_fallback_ttl_ms: int = 1000
    tracking_heartbeat_seconds: float = 1.0
    redis_socket_timeout_ms: int = 75
    redis_connect_timeout_ms: int = 100
    redis_retry_timeout_ms: int = 500
    redis_max_connections: int = 160
    redis_cluster: bool = False
    cluster_refresh_seconds: float = 5.0
    breaker_failure_threshold: int = 3
    breaker_cooldown_seconds: float = 5.0
    db_connect_timeout_seconds: int = 3
    db_statement_timeout_ms: int = 30_000
    db_pool_size: int = 20
    db_control_connections: int = 4
    db_pool_wait_seconds: float = 10.0
    slow_query_seconds: float | None = None
    gunicorn_threads: int = 128
    request_log_hit_sample: float = 0.01
    log_summary_seconds: float = 10.0
    write_api_token: str | None = None
    items_invalidation: str = "delete"
    # The dashboard's charts: PromQL against this Prometheus (None: no charts),
    # and where a browser opens its UI.
    prometheus_url: str | None = None
    prometheus_ui_url: str | None = None

    @property
    def memory_tier(self) -> bool:
        """Whether workers keep tier-1 copies (``two-tier``, and ``edge`` behind Nginx)."""
        return self.cache_strategy in MEMORY_TIER_STRATEGIES

    @property
    def fill_wait_seconds(self) -> float:
        """How long a thread may wait on a fill it joined: the leader's whole
        path (the lock wait, then its own query with connect and pool wait)."""
        return (
            self.cache_lock_wait_seconds
            + self.db_statement_timeout_ms / 1000
            + self.db_connect_timeout_seconds
            + self.db_pool_wait_seconds
            + 2.0
        )

    @property
    def tombstone_ttl_ms(self) -> int:
        """A tombstone outlives any fill that read the row before the write."""
        return self.db_statement_timeout_ms + int(self.fill_wait_seconds * 1000)

    @property
    def fence_ttl_ms(self) -> int:
        """How long a key's fence counter lives after its last use: as long as a
        tombstone, so it outlives any writer that could still race; after that
        fences restart from the server's clock, still growing."""
        return self.tombstone_ttl_ms

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        namespace = env.get("CACHE_NAMESPACE", "").strip() or "lab"
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", namespace):
            raise ConfigError(
                "CACHE_NAMESPACE must be 1-32 characters of a-z, 0-9, '_' or '-', "
                f"starting with a letter; got {namespace!r}"
            )
        token = env.get("WRITE_API_TOKEN", "").strip() or None
        if token is not None and not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,256}", token):
            raise ConfigError(
                "WRITE_API_TOKEN must be 16-256 characters of letters, digits "
                "or ._~+/=- (or empty to keep the write API off)"
            )
        settings = cls(
            database_url=database_url(env),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss")),
            cache_strategy=_choice(env, "CACHE_STRATEGY", "two-tier", STRATEGIES),
            edge_cache_seconds=read_integer(env, "EDGE_CACHE_SECONDS", 1, 1, 60),
            cache_ttl_seconds=read_integer(env, "CACHE_TTL_SECONDS", 10, 1, 86_400),
            cache_grace_seconds=read_integer(env, "CACHE_GRACE_SECONDS", 300, 0, 86_400),
            cache_jitter_ratio=read_number(env, "CACHE_JITTER_RATIO", 0.1, 0.0, 0.5),
            cache_namespace=namespace,
            cache_lock_wait_seconds=read_number(env, "CACHE_LOCK_WAIT_SECONDS", 15.0, 0.1, 300.0),
            cache_lock_lease_seconds=read_number(env, "CACHE_LOCK_LEASE_SECONDS", 5.0, 0.3, 60.0),
            xfetch_beta=read_number(env, "XFETCH_BETA", 1.0, 0.0, 10.0),
            local_cache_size=read_integer(env, "LOCAL_CACHE_SIZE", 1024, 1, 1_000_000),
            local_cache_bytes=read_integer(
                env, "LOCAL_CACHE_BYTES", 64 * 1024 * 1024, 64 * 1024, 16 * 1024**3
            ),
            negative_ttl_seconds=read_number(env, "NEGATIVE_TTL_SECONDS", 5.0, 0.1, 3600.0),
            refresh_threads=read_integer(env, "CACHE_REFRESH_THREADS", 4, 1, 64),
            refresh_queue=read_integer(env, "CACHE_REFRESH_QUEUE", 256, 0, 100_000),
            fill_slots=read_integer(env, "CACHE_FILL_SLOTS", 16, 1, 1_000),
            miss_slots=read_integer(env, "CACHE_MISS_SLOTS", 32, 1, 1_000),
            follower_slots=read_integer(env, "CACHE_FOLLOWER_SLOTS", 80, 1, 1_000),
            cache_tracking=_choice(env, "CACHE_TRACKING", "auto", TRACKING_CHOICES),
            memory_fallback_ttl_ms=read_integer(env, "MEMORY_FALLBACK_TTL_MS", 1000, 0, 60_000),
            tracking_heartbeat_seconds=read_number(
                env, "TRACKING_HEARTBEAT_SECONDS", 1.0, 0.1, 60.0
            ),
            redis_socket_timeout_ms=read_integer(env, "REDIS_SOCKET_TIMEOUT_MS", 75, 1, 10_000),
            redis_connect_timeout_ms=read_integer(env, "REDIS_CONNECT_TIMEOUT_MS", 100, 1, 10_000),
            redis_retry_timeout_ms=read_integer(env, "REDIS_RETRY_TIMEOUT_MS", 500, 1, 60_000),
            redis_max_connections=read_integer(env, "REDIS_MAX_CONNECTIONS", 160, 1, 10_000),
            redis_cluster=_choice(env, "REDIS_CLUSTER", "off", CLUSTER_CHOICES) == "on",
            cluster_refresh_seconds=read_number(env, "CLUSTER_REFRESH_SECONDS", 5.0, 0.5, 300.0),
            breaker_failure_threshold=read_integer(env, "BREAKER_FAILURE_THRESHOLD", 3, 1, 1_000),
            breaker_cooldown_seconds=read_number(env, "BREAKER_COOLDOWN_SECONDS", 5.0, 0.1, 600.0),
            db_connect_timeout_seconds=read_integer(env, "DB_CONNECT_TIMEOUT_SECONDS", 3, 1, 60),
            db_statement_timeout_ms=read_integer(
                env, "DB_STATEMENT_TIMEOUT_MS", 30_000, 100, 600_000
            ),
            db_pool_size=read_integer(env, "DB_POOL_SIZE", 20, 1, 1_000),
            db_control_connections=read_integer(env, "DB_CONTROL_CONNECTIONS", 4, 1, 100),
            db_pool_wait_seconds=read_number(env, "DB_POOL_WAIT_SECONDS", 10.0, 0.0, 300.0),
            slow_query_seconds=read_number(env, "SLOW_QUERY_SECONDS", -1.0, 0.0, 300.0)
            if env.get("SLOW_QUERY_SECONDS", "").strip()
            else None,
            gunicorn_threads=read_integer(env, "GUNICORN_THREADS", 128, 2, 1000),
            request_log_hit_sample=read_number(env, "REQUEST_LOG_HIT_SAMPLE", 0.01, 0.0, 1.0),
            log_summary_seconds=read_number(env, "LOG_SUMMARY_SECONDS", 10.0, 0.0, 3600.0),
            write_api_token=token,
            items_invalidation=_choice(env, "ITEMS_INVALIDATION", "delete", INVALIDATION_MODES),
            prometheus_url=_optional_url(env, "PROMETHEUS_URL"),
            prometheus_ui_url=_optional_url(env, "PROMETHEUS_UI_URL"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-checks: combinations that would make the engine misbehave."""
        if (
            self.slow_query_seconds is not None
            and self.db_statement_timeout_ms <= self.slow_query_seconds * 1000
        ):
            raise ConfigError(
                f"DB_STATEMENT_TIMEOUT_MS ({self.db_statement_timeout_ms}) must exceed "
                f"SLOW_QUERY_SECONDS ({self.slow_query_seconds:g} s), or every query times out"
            )
        if (
            self.slow_query_seconds is not None
            and self.cache_lock_wait_seconds <= self.slow_query_seconds
        ):
            raise ConfigError(
                f"CACHE_LOCK_WAIT_SECONDS ({self.cache_lock_wait_seconds:g}) must exceed "
                f"SLOW_QUERY_SECONDS ({self.slow_query_seconds:g}), or requests waiting "
                "for another process's fill give up (503) before it can finish"
            )
        if self.fill_slots + self.refresh_threads > self.db_pool_size:
            raise ConfigError(
                f"DB_POOL_SIZE ({self.db_pool_size}) must be at least CACHE_FILL_SLOTS "
                f"({self.fill_slots}) + CACHE_REFRESH_THREADS ({self.refresh_threads}), so a "
                "fill never waits for a database connection"
            )
        if self.fill_slots > self.miss_slots:
            raise ConfigError(
                f"CACHE_FILL_SLOTS ({self.fill_slots}) must not exceed "
                f"CACHE_MISS_SLOTS ({self.miss_slots})"
            )
        if self.miss_slots + self.follower_slots >= self.gunicorn_threads:
            raise ConfigError(
                f"CACHE_MISS_SLOTS ({self.miss_slots}) + CACHE_FOLLOWER_SLOTS "
                f"({self.follower_slots}) must be below GUNICORN_THREADS "
                f"({self.gunicorn_threads}), so some threads always serve hits"
            )
        if self.redis_cluster and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ConfigError(
                "REDIS_URL must use database 0 (or none) with REDIS_CLUSTER=on: "
                f"a cluster has no other; got {urlsplit(self.redis_url).path!r}"
            )
        needed = self.gunicorn_threads + self.refresh_threads + 2
        if self.redis_max_connections < needed:
            raise ConfigError(
                f"REDIS_MAX_CONNECTIONS ({self.redis_max_connections}) must cover GUNICORN_THREADS "
                f"+ CACHE_REFRESH_THREADS + 2 ({needed}), or a busy worker waits for its own pool"
            )

    def public(self) -> dict[str, object]:
        """Settings safe to show on a page: everything but the connection URLs and the token."""
        hidden = {"database_url", "redis_url", "write_api_token", "prometheus_url"}
        shown: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden
        }
        shown["write_api"] = "on" if self.write_api_token else "off"
        return shown
