"""Per-request bookkeeping: request id, duration histogram, one JSON log line."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

from . import metrics
from .params import REQUEST_ID

log = logging.getLogger("cachelab.request")


def register(app: Flask) -> None:
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
        cache_result = lookup.metric_result if lookup else "none"
        route = request.url_rule.rule if request.url_rule else "unmatched"
        status_class = f"{response.status_code // 100}xx"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if route != "/metrics":
            metrics.REQUEST_SECONDS.labels(route, cache_result, status_class).observe(elapsed)
        if route not in ("/healthz", "/metrics"):
            fields = {
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "client": request.remote_addr,
                "cache": lookup.result if lookup else None,
                "source": lookup.source if lookup else None,
                "timings_ms": {k: round(v, 2) for k, v in lookup.timings_ms.items()}
                if lookup
                else None,
            }
            log.info("request", extra=fields)
        return response
