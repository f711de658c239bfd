"""Closed-loop load with wrk, from the bench stack's ``wrk`` container.

wrk keeps ``connections`` requests in flight and sends the next one on a
connection only when the previous answer arrived: it measures how fast a
system can go (throughput at saturation), and its latencies are those of a
closed loop (a stall delays the requests that would have been sent during it,
which then never count). The open-loop figures come from :mod:`loadtest.k6run`.
"""

from __future__ import annotations

import json

from .errors import BenchError
from .stack import Stack


def run_wrk(
    stack: Stack,
    url: str,
    seconds: float,
    connections: int,
    threads: int,
    request_timeout: float,
) -> dict:
    """One wrk run inside the wrk container; wrk's summary (report.lua) as a dict:
    requests, duration_us, errors{...}, latency_us{p50, p90, p99, max, mean}."""
    command = [
        "timeout",
        f"{seconds + request_timeout + 30:.0f}",
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={request_timeout:g}s",
        "-s",
        "/bench/report.lua",
        url,
    ]
    code, output = stack.container("wrk").exec_run(command)
    text = output.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise BenchError(f"wrk against {url} failed (exit {code}): {text[-1500:]}")
    return json.loads(lines[-1])


def run_wrk_image(
    image: str,
    url: str,
    seconds: float,
    connections: int,
    threads: int,
    request_timeout: float,
) -> dict:
    """wrk from its image with ``docker run --network host``: for a ``--target``."""
    import subprocess

    command = [
        "docker", "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--label", "cachelab.bench=wrk",
        image, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
        f"--timeout={request_timeout:g}s", "-s", "/bench/report.lua", url,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + request_timeout + 120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"wrk ({image}) against {url} did not run: {exc}") from exc
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise BenchError(
            f"wrk against {url} failed (exit {result.returncode}): {result.stderr[-1500:]}"
        )
    return json.loads(lines[-1])
