"""PostgreSQL's own count of slow queries over a run, sampled once a second.

The benchmarks count database work on the database's side
(``pg_stat_statements``, exact the moment a query returns), never with the
app's counters about itself; this sampler gives the per-second series the
charts draw.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

from .stack import Stack


class QuerySampler:
    """PostgreSQL's count of finished slow queries, once a second during a run."""

    def __init__(self, stack: Stack, interval: float = 1.0, source: str = "version") -> None:
        self.stack, self.interval, self.source = stack, interval, source
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="query-sampler", daemon=True)

    def __enter__(self) -> QuerySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), self.stack.slow_calls(self.source)))
            except Exception:  # noqa: BLE001 - a missed sample is a gap in the chart
                pass
            if self._stop.wait(self.interval):
                return

    def write(self, path: Path, origin: float | None = None) -> None:
        """Samples as seconds since ``origin`` (default: the first sample)."""
        if origin is None:
            origin = self.samples[0][0] if self.samples else 0.0
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["elapsed_s", "queries"])
            base = self.samples[0][1] if self.samples else 0
            for at, calls in self.samples:
                out.writerow([f"{at - origin:.2f}", calls - base])
