"""Headless Locust runs on this host, for the benchmarks that use Locust's scenarios.

Locust is the lab's interactive load tool (the web UI, the scenarios in
loadtest/locustfile.py); the latency and staleness benchmarks run the same
scenarios headless. Open-loop figures come from k6 (:mod:`loadtest.k6run`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import BenchError
from .stack import ROOT

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def headless_locust(host: str, users: int, spawn_rate: float, seconds: float) -> list[str]:
    """The start of every headless Locust run the benchmarks make (from this host).

    Failures are reported, not fatal: only thresholds set the exit code."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-H",
        host,
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "-t",
        f"{math.ceil(seconds)}s",
        "--only-summary",
        "--exit-code-on-error",
        "0",
    ]


def locust_environment(**extra: str) -> dict[str, str]:
    """This process' environment without LOCUST_* (a lab's Locust settings must not
    leak into a benchmark's run), with the repository on the path (the locustfile
    imports loadtest.ledger), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **extra}


def run_locust(
    command: list[str],
    run_dir: Path,
    duration: float,
    label: str,
    say: Callable[[str], None],
    env: dict[str, str] | None = None,
    log_name: str = "locust.log",
) -> tuple[int, str]:
    """Run Locust, printing progress; bounded by the run time plus a grace period."""
    log_path = run_dir / log_name
    deadline = time.monotonic() + duration + 60
    started = time.monotonic()
    next_report = started + 10
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=env or locust_environment(),
        )
        try:
            while process.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    process.kill()
                    process.wait(10)
                    raise BenchError(
                        f"{label}: Locust did not finish within "
                        f"{duration + 60:.0f} s; see {log_path}"
                    )
                if now >= next_report:
                    say(f"  {label}: {now - started:.0f}/{duration:.0f} s")
                    next_report += 10
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, log_path.read_text(errors="replace")
