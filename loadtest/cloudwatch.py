"""What AWS measured while a load generator run ran (CloudWatch), for the report.

``python -m loadtest.loadgen fetch`` calls :func:`measure` after it brings a
run back, with the caller's AWS credentials (the load generator's role may
not read metrics). Over the run's window (run.json's ``started`` and its
length, widened to whole minutes: CloudWatch keeps these metrics per minute):

* the app instances' CPU (``AWS/EC2 CPUUtilization`` of the Auto Scaling
  group, average), turned into CPU-seconds with the instance type's vCPUs;
* the database's CPU (``AWS/RDS CPUUtilization``, average);
* the app's cache results (the lab's namespace, from its ``cache_summary``
  log lines): ``CacheMiss`` is the number of slow queries the app ran.

These are AWS's own figures, not the load generator's; a metric with no data
point in the window is reported as missing, never as 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from .cliargs import optional_duration

RESULTS = ("hit", "stale", "miss", "collapsed", "bypass", "overloaded")
# figure: (the lab configuration's key, CloudWatch namespace, its dimension)
CPU = {
    "app_cpu_percent": ("app_group", "AWS/EC2", "AutoScalingGroupName"),
    "db_cpu_percent": ("db_instance", "AWS/RDS", "DBInstanceIdentifier"),
}
METRIC = {r: "Cache" + r.capitalize() for r in RESULTS}


def run_seconds(meta: dict) -> float:
    """How long the run loaded its target: its duration, times its steps when open loop."""
    try:
        seconds = optional_duration(str(meta.get("duration", "0s")))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"run.json: {exc}") from None
    return seconds * max(1, len(meta.get("rates") or []))


def window(meta: dict) -> tuple[datetime, datetime]:
    """The run's start and end, widened to whole minutes."""
    started = datetime.strptime(meta["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    ended = started + timedelta(seconds=run_seconds(meta))
    start = started.replace(second=0, microsecond=0)
    end = ended.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start, end


class Metrics(Protocol):
    """Where the data points come from: :class:`CloudWatch`, or a test's fake."""

    def datapoints(
        self,
        namespace: str,
        metric: str,
        dimensions: dict[str, str],
        statistic: str,
        start: datetime,
        end: datetime,
    ) -> list[float]: ...


class CloudWatch:
    """``aws cloudwatch get-metric-statistics`` through the AWS CLI (AWS_ENDPOINT_URL works)."""

    def __init__(self, aws: str, region: str) -> None:
        self.aws, self.region = aws, region

    def datapoints(
        self,
        namespace: str,
        metric: str,
        dimensions: dict[str, str],
        statistic: str,
        start: datetime,
        end: datetime,
    ) -> list[float]:
        command = [
            self.aws,
            "cloudwatch",
            "get-metric-statistics",
            "--region",
            self.region,
            "--namespace",
            namespace,
            "--metric-name",
            metric,
            "--start-time",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--end-time",
            end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--period",
            "60",
            "--statistics",
            statistic,
            "--output",
            "json",
        ]
        if dimensions:
            command += ["--dimensions"] + [f"Name={k},Value={v}" for k, v in dimensions.items()]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot read {namespace} {metric}: {proc.stderr.strip()[-300:]}")
        return [float(p[statistic]) for p in json.loads(proc.stdout).get("Datapoints", [])]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measure(run_dir: Path, cloudwatch: Metrics) -> dict:
    """AWS's figures for the run in ``run_dir``, also written to its aws-load.json."""
    meta = json.loads((run_dir / "run.json").read_text())
    metrics = (meta.get("lab") or {}).get("metrics") or {}
    start, end = window(meta)
    found: dict = {
        "window": [start.isoformat(), end.isoformat()],
        "source": "CloudWatch, 1-minute averages and sums over the window",
    }
    for figure, (key, namespace, dimension) in CPU.items():
        if metrics.get(key):
            points = cloudwatch.datapoints(
                namespace, "CPUUtilization", {dimension: metrics[key]}, "Average", start, end
            )
            found[figure] = _mean(points)
    if metrics.get("namespace"):
        results = {}
        for result, name in METRIC.items():
            points = cloudwatch.datapoints(metrics["namespace"], name, {}, "Sum", start, end)
            results[result] = sum(points) if points else None
        found["cache_results"] = results
    (run_dir / "aws-load.json").write_text(json.dumps(found, indent=2))
    return found
