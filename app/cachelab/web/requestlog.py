"""Per-request bookkeeping: request id, duration histogram, the app's log lines.

Nginx already logs every request (JSON, with ``upstream_response_time`` and
the cache result), so the app does not write a second line per hit:

* every request that is not a cache hit (a miss, a stale or degraded answer,
  an error) gets one JSON line, with the request id Nginx sent;
* hits are sampled (``REQUEST_LOG_HIT_SAMPLE``, 1 % by default; 1 logs all);
* every ``LOG_SUMMARY_SECONDS`` each worker writes one ``cache_summary`` line
  with exact counts per result (what CloudWatch's metric filters read on AWS).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from flask import Flask, Response, g, request

from .. import metrics
from ..engine.model import Lookup
from .params import REQUEST_ID

log = logging.getLogger("cachelab.request")
summary_log = logging.getLogger("cachelab.summary")
SUMMARY_RESULTS = ("hit", "stale", "miss", "collapsed", "bypass", "local", "overloaded")
_QUIET_ROUTES = ("/healthz", "/metrics", "/readyz", "/api/dashboard")


class Summary:
    """Counts per cache result, written as one line every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, result: str) -> None:
        with self._lock:
            self._counts[result] += 1

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-summary", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
            now, since, self._since = time.monotonic(), self._since, time.monotonic()
        if counts:
            summary_log.info(
                "cache summary",
                extra={
                    "event": "cache_summary",
                    "interval_s": round(now - since, 3),
                    **{result: counts.get(result, 0) for result in SUMMARY_RESULTS},
                },
            )

    def close(self) -> None:
        self._stop.set()
        self.flush()


def request_id(incoming: str) -> str:
    """Nginx always sends one; anything malformed is replaced, not trusted."""
    return incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


class Books:
    """What every answered request leaves behind: its duration in the histogram,
    its cache result in the summary and, unless it is a hit left out of the
    sample, one log line. Shared by Flask (below) and the WSGI hit path
    (:mod:`cachelab.web.hitpath`)."""

    def __init__(self, summary: Summary, hit_sample: float) -> None:
        self.summary = summary
        self.hit_sample = hit_sample
        self._sample = random.Random()

    def record(
        self,
        route: str,
        status: int,
        elapsed: float,
        cache_result: str,
        lookup: Lookup | None,
        request_id: str,
        method: str,
        path: str,
        client: Callable[[], str | None],
    ) -> None:
        metrics.request_seconds(route, cache_result, f"{status // 100}xx").observe(elapsed)
        if cache_result != "none":
            self.summary.count(cache_result)
        if route in _QUIET_ROUTES:
            return
        if cache_result == "hit" and status < 400 and self._sample.random() >= self.hit_sample:
            return
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client(),
                "cache": lookup.result if lookup else None,
                "source": lookup.tier if lookup else None,
                "timings_ms": {k: round(v, 2) for k, v in lookup.timings_ms.items()}
                if lookup
                else None,
            },
        )


def register(app: Flask, summary: Summary, hit_sample: float) -> Books:
    books = Books(summary, hit_sample)

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id(request.headers.get("X-Request-ID", ""))

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        lookup = g.get("lookup")
        cache_result = lookup.metric_result if lookup else g.get("cache_result", "none")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if route == "/metrics":
            return response
        books.record(
            route,
            response.status_code,
            elapsed,
            cache_result,
            lookup,
            g.get("request_id"),
            request.method,
            request.path,
            lambda: request.remote_addr,
        )
        return response

    return books
