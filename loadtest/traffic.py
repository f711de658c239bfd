"""Bounded background traffic for fault tests and soaks.

``Traffic`` runs ``threads`` loops of GETs against a base URL on 127.0.0.1,
paced to about ``rate`` requests per second in total, cycling through
``paths``. It stops at ``duration`` seconds or ``max_requests`` requests,
whichever comes first, or when :meth:`stop` is called. Every request is kept
as a :class:`Hit` (start time, latency, status, X-Cache, a short body for
answers other than 200), so a test can cut the run into phases with
:meth:`between` and check each one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from . import stats


@dataclass(frozen=True)
class Hit:
    started: float  # time.monotonic() when the request was sent
    seconds: float
    status: int  # 0: no HTTP answer (connection error or client timeout)
    x_cache: str
    path: str
    body: str  # the first 300 characters of an answer other than 200
    headers: dict  # every header of an answer other than 200
    cache_status: str = ""  # RFC 9211 Cache-Status: says which tier served a hit

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def percentile(values: Sequence[float], q: float) -> float:
    """The package's one percentile (loadtest.stats), 0.0 for no values."""
    found = stats.percentile(values, q)
    return 0.0 if found is None else found


class Hits(list):
    """A list of :class:`Hit` with the summaries tests and reports need."""

    def statuses(self) -> Counter:
        return Counter(hit.status for hit in self)

    def caches(self) -> Counter:
        return Counter(hit.x_cache for hit in self)

    def errors(self) -> Hits:
        return Hits(hit for hit in self if hit.status != 200)

    def latency(self, q: float) -> float:
        return percentile([hit.seconds for hit in self], q)

    def max_latency(self) -> float:
        return max((hit.seconds for hit in self), default=0.0)

    def summary(self) -> str:
        return (
            f"{len(self)} requests, statuses {dict(self.statuses())}, "
            f"X-Cache {dict(self.caches())}, p50 {self.latency(50):.3f}s, "
            f"p99 {self.latency(99):.3f}s, max {self.max_latency():.3f}s"
        )


class Traffic:
    def __init__(
        self,
        base_url: str,
        paths: Sequence[str] = ("/api/version",),
        threads: int = 4,
        rate: float = 20.0,
        duration: float = 30.0,
        max_requests: int = 5_000,
        timeout: float = 20.0,
    ) -> None:
        if not base_url.startswith("http://127.0.0.1:"):
            raise ValueError("traffic goes to the stack's published port on 127.0.0.1 only")
        self.base_url, self.paths, self.threads = base_url, list(paths), threads
        self.interval = threads / rate if rate > 0 else 0.0  # per thread
        self.duration, self.max_requests, self.timeout = duration, max_requests, timeout
        self.hits = Hits()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._sent = 0
        self.t0 = 0.0

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.t0 = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(index,), daemon=True, name=f"traffic-{index}"
            )
            worker.start()
            self._workers.append(worker)

    def stop(self) -> Hits:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        return self.hits

    @property
    def running(self) -> bool:
        return any(worker.is_alive() for worker in self._workers)

    # -- views ----------------------------------------------------------------
    def between(self, start: float, end: float | None = None) -> Hits:
        """Requests sent in [start, end) (time.monotonic() values)."""
        with self._lock:
            return Hits(
                sorted(
                    (
                        hit
                        for hit in self.hits
                        if hit.started >= start and (end is None or hit.started < end)
                    ),
                    key=lambda hit: hit.started,
                )
            )

    def since(self, start: float) -> Hits:
        return self.between(start)

    def count_since(self, start: float, status: int = 200) -> int:
        return sum(1 for hit in self.since(start) if hit.status == status)

    # -- the loop ---------------------------------------------------------------
    def _take_ticket(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _run(self, index: int) -> None:
        session = requests.Session()
        # Spread the threads over one interval so the pace is even.
        next_at = time.monotonic() + self.interval * index / max(self.threads, 1)
        n = index
        deadline = self.t0 + self.duration
        while not self._stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            if time.monotonic() >= deadline or not self._take_ticket():
                break
            path = self.paths[n % len(self.paths)]
            n += 1
            started = time.monotonic()
            try:
                response = session.get(self.base_url + path, timeout=self.timeout)
                hit = Hit(
                    started,
                    time.monotonic() - started,
                    response.status_code,
                    response.headers.get("X-Cache", ""),
                    path,
                    "" if response.status_code == 200 else response.text[:300],
                    {} if response.status_code == 200 else dict(response.headers),
                    response.headers.get("Cache-Status", ""),
                )
            except requests.RequestException as exc:
                hit = Hit(started, time.monotonic() - started, 0, "", path, type(exc).__name__, {})
                session = requests.Session()
            with self._lock:
                self.hits.append(hit)
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
