"""Error responses: a reason for the client, never a traceback.

JSON for ``/api/`` and clients that ask for it, a small HTML page otherwise.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import metrics
from ..engine.fills import FillTimeout
from ..engine.model import NotFound, SourceUnavailable
from ..resilience.bulkhead import RETRY_AFTER_SECONDS as OVERLOAD_RETRY_SECONDS
from ..resilience.bulkhead import Overloaded
from ..resilience.singleflight import FlightTimeout

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


def _is_lookup() -> bool:
    """A GET of a route that reads through the cache (a PUT is a write)."""
    return request.method in ("GET", "HEAD") and (
        request.path in ("/", "/api/version") or request.path.startswith("/api/items/")
    )


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, code: str, message: str) -> Response:
    request_id = g.get("request_id", "")
    if _wants_json():
        response = jsonify(error=code, message=message, status=status, request_id=request_id)
    else:
        response = Response(
            render_template(
                "error.html", status=status, code=code, message=message, request_id=request_id
            ),
            mimetype="text/html",
        )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        for name, value in exc.get_headers():
            if name == "WWW-Authenticate":
                response.headers[name] = value
        return response

    @app.errorhandler(SourceUnavailable)
    def _database_unavailable(exc: SourceUnavailable) -> Response:
        """PostgreSQL could not answer and nothing was cached: a lookup that
        failed, counted in the hit ratio's denominator (``unavailable``)."""
        log.warning(
            "database unavailable", extra={"reason": str(exc), "request_id": g.get("request_id")}
        )
        if _is_lookup():
            strategy = app.config["SETTINGS"].cache_strategy
            metrics.CACHE_REQUESTS[(strategy, "unavailable", "none")].inc()
            g.cache_result = "unavailable"
        response = error_response(
            503,
            "database_unavailable",
            "PostgreSQL is not answering and no cached value is available; try again shortly.",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Overloaded)
    @app.errorhandler(FlightTimeout)
    @app.errorhandler(FillTimeout)
    def _overloaded(exc: Exception) -> Response:
        """The bulkhead refused a miss (or a wait ran past its deadline): a fast,
        documented 503 rather than a thread held for seconds."""
        strategy = app.config["SETTINGS"].cache_strategy
        metrics.CACHE_REQUESTS[(strategy, "overloaded", "none")].inc()
        g.cache_result = "overloaded"
        detail = "overloaded" if isinstance(exc, Overloaded) else "fill-timeout"
        response = error_response(
            503,
            "overloaded",
            "Too many cache misses are in flight on this server; try again in a second. "
            "Cached answers are not affected.",
        )
        response.headers["Retry-After"] = str(OVERLOAD_RETRY_SECONDS)
        response.headers["X-Cache"] = "MISS"
        response.headers["Cache-Status"] = f"lab; fwd=miss; detail={detail}"
        return response

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> Response:
        return error_response(404, "not_found", str(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response(500, "internal_error", "Unexpected error; see the app log.")
