"""The cache server's own ceiling: valkey-benchmark against the lab's cache, closed loop.

What the cache itself can answer, apart from any app: ``valkey-benchmark``
(``redis-benchmark`` in images without it) from a one-off container of the
cache's own image on the bench stack's network, GET of one 200-byte key over
50 connections -- a **closed loop** (each connection waits for its answer), so
a throughput at saturation, not a rate at a latency target; the capacity
report labels it so.
"""

from __future__ import annotations

import csv
import io

from .errors import BenchError
from .stack import Stack
from .stats import interval


def measure(stack: Stack, repeats: int, requests: int = 200_000) -> dict:
    """valkey-benchmark GET against the stack's cache, closed loop, ``repeats`` times."""
    runs = []
    for _ in range(repeats):
        result = stack.compose(
            "--profile",
            "cache-bench",
            "run",
            "--rm",
            "--no-deps",
            "cache-bench",
            "-h",
            "redis",
            "-t",
            "get",
            "-n",
            str(requests),
            "-c",
            "50",
            "-d",
            "200",
            "--csv",
            timeout=300,
        )
        runs.append(parse_benchmark_csv(result.stdout))
    rps = interval([r["rps"] for r in runs])
    p99 = interval([r["p99_ms"] for r in runs if r.get("p99_ms") is not None])
    return {
        "tool": "valkey-benchmark (redis-benchmark where the image has no valkey-benchmark)",
        "loop": "closed",
        "command": f"-t get -n {requests} -c 50 -d 200",
        "runs": runs,
        "rps": None if rps is None else rps.to_dict(),
        "p99_ms": None if p99 is None else p99.to_dict(),
    }


def parse_benchmark_csv(text: str) -> dict:
    """``"test","rps","avg_latency_ms",...,"p99_latency_ms",...`` -> the GET row."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    header = [cell.strip().lower() for cell in rows[0]] if rows and rows[0][0] == "test" else None
    for row in rows[1 if header else 0 :]:
        if row[0].upper().startswith("GET"):
            if header:
                values = dict(zip(header, row, strict=False))
                return {
                    "rps": float(values["rps"]),
                    "p50_ms": float(values.get("p50_latency_ms", "nan")),
                    "p99_ms": float(values.get("p99_latency_ms", "nan")),
                }
            return {"rps": float(row[1]), "p50_ms": None, "p99_ms": None}
    raise BenchError(f"no GET row in the benchmark's output: {text[-500:]}")
