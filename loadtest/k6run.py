"""Open-loop load with k6 (loadtest/k6/openloop.js): one step at a fixed arrival rate.

k6's ``constant-arrival-rate`` executor starts a request every 1/rate s
whether or not the earlier ones have answered, so the latency of every request
due during a stall includes the stall (no coordinated omission). A request
that found no free virtual user is not sent late: k6 counts it as *dropped*,
and a step with drops did not hold its rate. Latency runs from the request
asking for a connection to its last byte; k6 keeps every sample, so the
percentiles (to p99.9) are exact.

Two ways to run k6: ``exec`` in the bench stack's ``k6`` container (on the
stack's network, as wrk is), or ``docker run --network host`` of the k6 image
for a ``--target`` URL (a lab on 127.0.0.1 or a deployment elsewhere).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BenchError

SCRIPT = Path(__file__).resolve().parent / "k6" / "openloop.js"
IMAGE_DEFAULT = "grafana/k6:1.1.0"
GRACE_S = 10  # the script's gracefulStop


@dataclass
class Step:
    """One k6 run at one offered rate (latencies in ms)."""

    rate: float
    duration_s: float
    requests: int
    errors: int
    dropped: int
    run_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    p95_ms: float | None = None  # summaries written before p(95) was asked for have none
    load: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # k6's own line, as openloop.js wrote it

    @property
    def achieved_rps(self) -> float:
        """Requests that completed, over the step's scheduled length."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def held_rate(self) -> bool:
        """No request was dropped (k6 had a VU for every scheduled request)."""
        return self.dropped == 0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        data = asdict(self)
        del data["summary"]
        data["achieved_rps"] = self.achieved_rps
        return data


MAX_VUS = 1000  # about 2 GB of k6 at most


def vus_for(rate: float, budget_ms: float = 100.0) -> int:
    """Virtual users for a rate: enough for every request in flight to take
    ``budget_ms`` (4x a 25 ms target) before one is dropped -- a VU is busy for
    the whole of its request -- within MAX_VUS."""
    return min(MAX_VUS, max(20, math.ceil(rate * budget_ms / 1000)))


def parse(summary: dict) -> Step:
    latency = summary.get("latency_ms") or {}

    def value(key: str) -> float | None:
        found = latency.get(key)
        return None if found is None or not latency.get("count") else float(found)

    return Step(
        rate=float(summary["rate"]),
        duration_s=float(summary["duration_s"]),
        requests=int(summary["requests"]),
        errors=int(summary["errors"]),
        dropped=int(summary["dropped"]),
        run_s=float(summary["run_ms"]) / 1000,
        p50_ms=value("med"),
        p90_ms=value("p(90)"),
        p99_ms=value("p(99)"),
        p999_ms=value("p(99.9)"),
        max_ms=value("max"),
        mean_ms=value("avg"),
        p95_ms=value("p(95)"),
        summary=summary,
    )


def _environment(url: str, rate: float, seconds: float, **settings) -> dict[str, str]:
    env = {
        "LAB_URL": url.rstrip("/"),
        "RATE": f"{rate:g}",
        "DURATION": f"{seconds:g}",
        "VUS": str(settings.pop("vus", None) or vus_for(rate)),
    }
    for name, value in settings.items():
        if value is not None:
            env[name.upper()] = str(value)
    return env


def _summary(code: int, text: str, where: str) -> Step:
    lines = [line for line in text.splitlines() if line.startswith('{"rate"')]
    if not lines:
        raise BenchError(f"k6 against {where} wrote no summary (exit {code}): {text[-1500:]}")
    return parse(json.loads(lines[-1]))


class ContainerK6:
    """k6 exec'ed in a running container (the bench stack's ``k6`` service),
    with loadtest/k6 mounted at /bench/k6."""

    def __init__(self, container) -> None:
        self.container = container

    def run(self, url: str, rate: float, seconds: float, **settings) -> Step:
        env = _environment(url, rate, seconds, **settings)
        command = ["timeout", f"{seconds + GRACE_S + 60:.0f}", "k6", "run", "-q", "--no-color"]
        for name, value in env.items():
            command += ["-e", f"{name}={value}"]
        code, output = self.container.exec_run(command + ["/bench/k6/openloop.js"])
        return _summary(code, output.decode(errors="replace"), url)


class DockerK6:
    """``docker run --rm --network host`` of the k6 image, the script on stdin:
    for a target outside the bench stack (``--target``)."""

    def __init__(self, image: str | None = None) -> None:
        self.image = image or os.environ.get("K6_IMAGE") or IMAGE_DEFAULT

    def run(self, url: str, rate: float, seconds: float, **settings) -> Step:
        env = _environment(url, rate, seconds, **settings)
        command = [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "host",
            "--label",
            "cachelab.bench=k6",
        ]
        command += [self.image, "run", "-q"]
        command.append("--no-color")
        for name, value in env.items():
            command += ["-e", f"{name}={value}"]
        try:
            result = subprocess.run(
                command + ["-"],
                input=SCRIPT.read_text(),
                capture_output=True,
                text=True,
                timeout=seconds + GRACE_S + 120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"k6 ({self.image}) against {url} did not run: {exc}") from exc
        return _summary(result.returncode, result.stdout + result.stderr, url)
