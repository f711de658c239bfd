"""A load generator's run read back, Locust's or k6's, in the same terms.

A run directory is what ``terraform/host/loadgen.sh`` uploads (and
``python -m loadtest.loadgen local|openloop`` writes here): ``run.json``
(where it ran, its parameters, the lab's configuration), and either

* Locust's ``locust_stats.csv`` (``loadgen run``, closed loop: users wait for
  each answer), whose Aggregated row gives the totals; or
* ``openloop.jsonl`` (``loadgen openloop``, k6's constant arrival rate): one
  summary line per step, as :func:`loadtest.k6run.parse` reads it.

An open-loop run stands for the **highest rate it held** within the latency
target: no request dropped or failed and p95 at most ``target_ms``. A run in
which no step did stands for its lowest step, which then misses the target.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import k6run

# The deployment the lab's Terraform makes by default (terraform/variables.tf),
# for a run measured locally.
DEFAULT_LAB = {
    "region": "eu-west-1",
    "app_instance_type": "t3.small",
    "app_instances_min": 1,
    "app_instances_max": 1,
    "gunicorn_workers": 2,
    "alb": False,
    "cache_strategy": "two-tier",
    "slow_query_seconds": 10,
    "cache_engine": "valkey",
    "cache_node_type": "cache.t4g.micro",
    "cache_nodes": 1,
    "db_instance_class": "db.t4g.micro",
    "db_multi_az": False,
    "db_storage_gib": 20,
    "db_max_connections": 75,
    "db_connections_app": 67,
    "app_root_volume_gib": 20,
}


@dataclass
class Run:
    """One run's totals (Locust's Aggregated row, or the open-loop step it stands
    for) and where it ran."""

    directory: Path
    where: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    lab: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    steps: list[k6run.Step] = field(default_factory=list)  # open loop only
    # the target's own load over the whole run: run.json's "load" (a local lab:
    # loadtest.labload) or aws-load.json (CloudWatch: loadtest.cloudwatch)
    load: dict = field(default_factory=dict)

    @property
    def open_loop(self) -> bool:
        return bool(self.steps)

    @property
    def total_requests(self) -> int:
        """Every request of the run (all its steps when open loop)."""
        return sum(s.requests for s in self.steps) if self.steps else self.requests

    def queries_per_thousand(self) -> tuple[float, str] | None:
        """Slow queries per 1,000 requests, and what counted them."""
        total = self.total_requests
        if not total:
            return None
        if "db_queries" in self.load:
            return 1000 * self.load["db_queries"] / total, "PostgreSQL"
        misses = (self.load.get("cache_results") or {}).get("miss")
        if misses is not None:
            return 1000 * misses / total, "the app's CacheMiss, CloudWatch"
        return None

    def cpu_seconds_per_thousand(self, vcpus: dict[str, int]) -> tuple[float, str] | None:
        """The app's CPU-seconds per 1,000 requests, and where they come from."""
        total = self.total_requests
        if not total:
            return None
        if "app_cpu_seconds" in self.load:
            return 1000 * self.load["app_cpu_seconds"] / total, "app containers' cgroups"
        percent = self.load.get("app_cpu_percent")
        window = self.load.get("window")
        kind = self.lab.get("app_instance_type")
        if percent is None or not window or kind not in vcpus:
            return None
        span = datetime.fromisoformat(window[1]) - datetime.fromisoformat(window[0])
        seconds = span.total_seconds()
        instances = int(self.lab.get("app_instances_min", 1))
        cpu = percent / 100 * vcpus[kind] * instances * seconds
        return 1000 * cpu / total, f"CPUUtilization x {instances} x {vcpus[kind]} vCPUs, CloudWatch"

    @property
    def label(self) -> str:
        lab = self.lab
        if self.where == "aws":
            return (
                f"AWS {lab.get('region', '?')}: {lab.get('app_instances_min', '?')} x "
                f"{lab.get('app_instance_type', '?')}, {lab.get('cache_nodes', '?')} x "
                f"{lab.get('cache_node_type', '?')}, {lab.get('db_instance_class', '?')}"
            )
        return f"local ({self.meta.get('machine', 'this machine')})"


def read_run(directory: Path, target_ms: float = 100.0) -> Run:
    """The run in ``directory``: open loop when it holds openloop.jsonl, else Locust's."""
    run = _read(directory, json.loads((directory / "run.json").read_text()), target_ms)
    aws_load = directory / "aws-load.json"
    run.load = json.loads(aws_load.read_text()) if aws_load.is_file() else run.meta.get("load", {})
    return run


def _read(directory: Path, meta: dict, target_ms: float) -> Run:
    if (directory / "openloop.jsonl").is_file():
        return _open_loop(directory, meta, target_ms)
    rows = list(csv.DictReader((directory / "locust_stats.csv").open()))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if total is None:
        raise ValueError(f"{directory}/locust_stats.csv has no Aggregated row")

    def number(key: str) -> float:
        value = total.get(key, "") or "0"
        return 0.0 if value == "N/A" else float(value)

    return Run(
        directory=directory,
        where=meta.get("where", "local"),
        requests=int(number("Request Count")),
        failures=int(number("Failure Count")),
        rps=number("Requests/s"),
        p50_ms=number("50%"),
        p95_ms=number("95%"),
        p99_ms=number("99%"),
        max_ms=number("Max Response Time"),
        lab={**DEFAULT_LAB, **meta.get("lab", {})},
        meta=meta,
    )


def met(step: k6run.Step, target_ms: float) -> bool:
    """The step held its rate, without an error, with p95 within the target."""
    return (
        step.held_rate
        and step.errors == 0
        and step.requests > 0
        and step.p95_ms is not None
        and step.p95_ms <= target_ms
    )


def _open_loop(directory: Path, meta: dict, target_ms: float) -> Run:
    lines = (directory / "openloop.jsonl").read_text().splitlines()
    steps = sorted((k6run.parse(json.loads(line)) for line in lines if line.strip()), key=rate)
    if not steps:
        raise ValueError(f"{directory}/openloop.jsonl has no step")
    chosen = ([s for s in steps if met(s, target_ms)] or steps[:1])[-1]
    return Run(
        directory=directory,
        where=meta.get("where", "local"),
        requests=chosen.requests,
        failures=chosen.errors + chosen.dropped,
        rps=chosen.achieved_rps,
        p50_ms=chosen.p50_ms or 0.0,
        p95_ms=chosen.p95_ms or 0.0,
        p99_ms=chosen.p99_ms or 0.0,
        max_ms=chosen.max_ms or 0.0,
        lab={**DEFAULT_LAB, **meta.get("lab", {})},
        meta=meta,
        steps=steps,
    )


def rate(step: k6run.Step) -> float:
    return step.rate
