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

from flask import Flask, Response, g, request

from . import metrics
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
            summary_log.info("cache summary", extra={
                "event": "cache_summary", "interval_s": round(now - since, 3),
                **{result: counts.get(result, 0) for result in SUMMARY_RESULTS}})

    def close(self) -> None:
        self._stop.set()
        self.flush()


def register(app: Flask, summary: Summary, hit_sample: float) -> None:
    sample = random.Random()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        # Nginx always sets one; anything malformed is replaced, not trusted.
        g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        lookup = g.get("lookup")
        cache_result = lookup.metric_result if lookup else g.get("cache_result", "none")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if route == "/metrics":
            return response
        status = response.status_code
        metrics.request_seconds(route, cache_result, f"{status // 100}xx").observe(elapsed)
        if cache_result != "none":
            summary.count(cache_result)
        if route in _QUIET_ROUTES:
            return response
        if cache_result == "hit" and status < 400 and sample.random() >= hit_sample:
            return response
        log.info("request", extra={
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": status, "duration_ms": round(elapsed * 1000, 2),
            "client": request.remote_addr,
            "cache": lookup.result if lookup else None,
            "source": lookup.tier if lookup else None,
            "timings_ms": {k: round(v, 2) for k, v in lookup.timings_ms.items()}
            if lookup else None,
        })
        return response
