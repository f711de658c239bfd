"""The running lab as benchmarks use it: is it up, what is it set to, set it.

The latency, staleness and screenshot commands drive the lab a user started
with ``docker compose up`` (or another Compose project of it): they change
its settings with ``docker compose up -d --wait`` and put them back.
"""

from __future__ import annotations

from .errors import BenchError
from .stack import DEFAULT_PROJECT, ROOT, Stack, metric

# The settings the benchmarks change (and read back to restore).
SETTINGS = ("CACHE_STRATEGY", "CACHE_TTL_SECONDS", "SLOW_QUERY_SECONDS", "EDGE_CACHE_SECONDS")


def lab_stack(project: str | None) -> Stack:
    """The user's lab (compose.yaml's project) or another project of it."""
    if project in (None, DEFAULT_PROJECT):
        return Stack.running_lab()
    return Stack(project=project, files=[ROOT / "compose.yaml"], env={})


def check_stack_up(stack: Stack) -> None:
    """Raise BenchError with what to do when the lab is not answering."""
    start = "start it with `docker compose up -d --wait` in the repository root"
    try:
        nginx = [c for c in stack.containers("nginx") if c.status == "running"]
    except Exception as exc:  # noqa: BLE001 - Docker itself is unreachable
        raise BenchError(f"cannot reach Docker ({exc}); is the Docker engine running?") from exc
    if not nginx:
        raise BenchError(
            f"the lab is not running: no running nginx container in Compose "
            f"project '{stack.project}'; {start}"
        )
    try:
        stack.wait_ready(timeout=20)
    except Exception as exc:  # noqa: BLE001
        raise BenchError(
            f"the lab in project '{stack.project}' does not answer /readyz "
            f"through Nginx ({exc}); check `docker compose ps` and the logs, "
            f"or {start}"
        ) from exc


def current_settings(stack: Stack) -> dict[str, str]:
    """The settings the benchmarks change, as the running app container has them."""
    app = stack.container("app")
    env = dict(item.split("=", 1) for item in app.attrs["Config"]["Env"] if "=" in item)
    # The app gets SLOW_QUERY_SECONDS too (checked against its timeouts); db-init
    # stores it in the database.
    return {name: env[name] for name in SETTINGS if env.get(name)}


def app_count(stack: Stack) -> int:
    return max(1, len([c for c in stack.containers("app") if c.status == "running"]))


def apply_settings(stack: Stack, settings: dict[str, str], apps: int) -> None:
    """`docker compose up -d --wait` for nginx and what it depends on, with ``settings``.

    Only services whose configuration changed are recreated (the app for a new
    strategy, PostgreSQL for a new delay); Locust's own services are left alone.
    """
    saved = stack.overrides
    stack.overrides = {**saved, **settings}
    try:
        stack.up("nginx", scale={"app": apps})
    finally:
        stack.overrides = saved
    stack.wait_ready(timeout=90)


def lookups(stack: Stack, strategy: str, results: tuple[str, ...]) -> dict[str, float]:
    """The app's lookups so far by result (``cachelab_cache_requests_total``)."""
    samples = stack.app_metrics()
    return {
        result: metric(samples, "cachelab_cache_requests_total", strategy=strategy, result=result)
        for result in results
    }
