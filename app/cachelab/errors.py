"""Error responses: a reason for the client, never a traceback.

JSON for ``/api/`` and clients that ask for it, a small HTML page otherwise.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .db import DatabaseUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


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
            render_template("error.html", status=status, code=code, message=message,
                            request_id=request_id),
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
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(DatabaseUnavailable)
    def _database_unavailable(exc: DatabaseUnavailable) -> Response:
        log.warning("database unavailable", extra={"reason": str(exc),
                                                   "request_id": g.get("request_id")})
        response = error_response(
            503, "database_unavailable",
            "PostgreSQL is not answering and no cached value is available; try again shortly.",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response(500, "internal_error", "Unexpected error; see the app log.")
