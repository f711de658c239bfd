"""What a headless Locust run left behind, read back: every request and the failures.

The figures come from ``requests.csv``, which the locustfile writes at quit
(``--requests-out``): one row per request with its start time and response
time. Percentiles are :func:`loadtest.stats.percentile` over those rows (not
Locust's rounded approximations), and throughput is the count of requests
that *completed* in each second (not Locust's ``current_rps``, a window
anchored at the last completed request that freezes during a stall).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import stats

CSV_PREFIX = "locust"  # <run dir>/locust_stats.csv, locust_failures.csv, ...
HTML_REPORT = "report.html"
REQUESTS_CSV = "requests.csv"  # every request, written by the locustfile at quit


@dataclass(frozen=True)
class Request:
    start: float  # epoch seconds
    response_ms: float
    failed: bool
    cache: str = ""  # X-Cache lower-cased, or "edge" (Nginx's micro-cache answered)

    @property
    def end(self) -> float:
        return self.start + self.response_ms / 1000


def read_requests(path: Path) -> list[Request]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            Request(
                float(row["start_s"]),
                float(row["response_ms"]),
                row["failed"] == "1",
                row.get("cache") or "",
            )
            for row in csv.DictReader(handle)
        ]


@dataclass(frozen=True)
class Figures:
    """A run's figures from its requests (percentiles in ms)."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    avg_ms: float


def figures(requests: list[Request], duration_s: float) -> Figures:
    times = [r.response_ms for r in requests]

    def pct(q: float) -> float:
        value = stats.percentile(times, q)
        return math.nan if value is None else value

    return Figures(
        requests=len(requests),
        failures=sum(r.failed for r in requests),
        rps=len(requests) / duration_s if duration_s else math.nan,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        max_ms=max(times, default=math.nan),
        avg_ms=sum(times) / len(times) if times else math.nan,
    )


def served(requests: list[Request]) -> tuple[dict[str, float], dict[str, float]]:
    """The clients' view of how answers were served: (app results by X-Cache, edge
    answers), in the terms of cachelab.metrics.hit_ratio (for a ``--target``)."""
    app: dict[str, float] = {}
    edge = 0.0
    for r in requests:
        if r.cache == "edge":
            edge += 1
        elif r.cache:
            app[r.cache] = app.get(r.cache, 0.0) + 1
    return app, {"hit": edge}


def completions_per_second(requests: list[Request], origin: float) -> list[int]:
    """Requests that completed in each second since ``origin`` (0 where none did)."""
    if not requests:
        return []
    end = max(r.end for r in requests)
    return stats.per_second((r.end for r in requests), origin, end)


def percentiles_by_start(
    requests: list[Request], origin: float, qs: tuple[float, ...] = (50, 95, 99)
) -> list[tuple[float, dict[float, float]]]:
    """Per second of *start* time: the percentiles of the requests sent then.

    By start, not by completion, so a request that waited 10 s is drawn when
    it was sent: a stall shows where it began and how long its requests took.
    """
    seconds: dict[int, list[float]] = {}
    for r in requests:
        seconds.setdefault(math.floor(r.start - origin), []).append(r.response_ms)
    out = []
    for second in sorted(seconds):
        values = seconds[second]
        found = {q: stats.percentile(values, q) for q in qs}
        out.append((float(second), {q: v for q, v in found.items() if v is not None}))
    return out


def read_failures(failures_csv: Path) -> dict[str, int]:
    """Error message -> occurrences, over every request name, from ``*_failures.csv``."""
    reasons: dict[str, int] = {}
    if not failures_csv.exists():
        return reasons
    with failures_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            error = row.get("Error") or "?"
            # CatchResponseError('HTTP 503 database_unavailable') -> the message
            match = re.fullmatch(r"CatchResponseError\((['\"])(.*)\1\)", error)
            error = match.group(2) if match else error
            try:
                count = int(float(row.get("Occurrences") or "0"))
            except ValueError:
                count = 0
            reasons[error] = reasons.get(error, 0) + count
    return reasons
