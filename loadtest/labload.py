"""The local lab's own load across a load generator run: its app's CPU and
PostgreSQL's slow queries, so a local run reports the same per-request
figures that CloudWatch gives for an AWS run (:mod:`loadtest.cloudwatch`).

Measured only when the run's URL is a Compose lab on this machine (the
container that publishes its port names the project): the CPU-seconds of the
project's ``app`` containers (their cgroups) and the slow queries PostgreSQL
finished (``pg_stat_statements``, on the database's side). Anything else (a
remote URL, no Docker) gives no figures, and the report says so.
"""

from __future__ import annotations

from . import cgroups, target
from .stack import ROOT, Stack


class LabLoad:
    """``with LabLoad(url) as load: ...`` then ``load.figures`` (empty when not measurable)."""

    def __init__(self, url: str) -> None:
        project = target.local_project(url)
        self.stack = (
            None
            if project is None
            else Stack(project=project, files=[ROOT / "compose.yaml"], env={})
        )
        self.figures: dict = {}
        self._start: tuple[float, int] | None = None

    def _sample(self) -> tuple[float, int] | None:
        if self.stack is None:
            return None
        try:
            cpu = 0.0
            for container in self.stack.containers("app"):
                if container.status != "running":
                    continue
                counters = cgroups.read(container.id)
                if counters is None:
                    return None
                cpu += counters.seconds
            queries = self.stack.slow_calls("version") + self.stack.slow_calls("item")
        except Exception:  # noqa: BLE001 - a lab without pg_stat_statements: no figures
            return None
        return cpu, queries

    def __enter__(self) -> LabLoad:
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None or self.stack is None:
            return
        self.figures = {
            "app_cpu_seconds": round(end[0] - self._start[0], 3),
            "db_queries": end[1] - self._start[1],
            "source": f"Compose project {self.stack.project}: the app containers' cgroups, "
            "PostgreSQL's pg_stat_statements",
        }
