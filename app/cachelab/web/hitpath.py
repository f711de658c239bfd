"""The WSGI hit path: tier-1 hits of ``/api/version`` and ``/`` answered before Flask.

Why: a hit served from this worker's memory costs a few microseconds of
cache work, but going through Flask costs far more than that -- a request
context, URL matching, ``before``/``after_request`` hooks, a ``Response`` object
with its header datastructure, ``ProxyFix`` -- about 170 µs of Python per
request here, more than the ~200 µs gunicorn itself spends on it. With
Flask's path a memory hit was no cheaper in CPU than Flask-Caching's pickled
response fetched from Redis (benchmark: ``python -m loadtest.bench hits``).
This middleware, in front of Flask (and of ``ProxyFix``), answers exactly one
case and hands everything else to Flask unchanged:

* ``GET`` or ``HEAD`` of ``/api/version`` or ``/``, with no query string or
  ``item=<0-9999>`` and nothing else (anything else -- ``cache=bypass``,
  repeated, unknown or malformed parameters -- goes to Flask, which gives the
  same answers and the same 400s as ever);
* a strategy with tier 1 (``two-tier``, ``edge``), and this worker holds a
  servable copy of the entry (:meth:`ReadPath.from_memory`, which applies tier
  1's rules) whose bytes for this page were already prepared by Flask's path
  (the first request of a generation goes through Flask and prepares them).

It answers with the same code as Flask's views: the body from
:func:`responses.json_body` / :func:`responses.page_body`, the cache headers
(``X-Cache``, ``Cache-Status``, ``Cache-Control``, ``ETag``, 304 on
``If-None-Match``) from :func:`responses.cache_headers` (and Nginx's expiry
from :func:`responses.edge_headers`), ``Server-Timing`` with
the measured ``memory`` and ``app`` durations, ``X-Request-ID`` from
:func:`requestlog.request_id`; it counts the lookup (:func:`views.count`) and
the request (:class:`requestlog.Books`: histogram, summary line, sampled log
line) as Flask's path does. tests/unit/test_http.py checks both paths give the
same headers and bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import responses, views
from .context import Lab
from .params import MAX_ITEM
from .requestlog import Books, request_id

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
# path -> (the route as Flask names it, the prepared kind, how to build the body)
_ROUTES: dict[str, tuple[str, str, Callable[[Any, Any], bytes], str]] = {
    "/api/version": ("/api/version", "version", responses.json_body, responses.JSON_TYPE),
    "/": ("/", responses.page_kind("index.html"), responses.page_body, responses.HTML_TYPE),
}
_STATUS = {200: "200 OK", 304: "304 NOT MODIFIED"}  # as werkzeug writes them


def _item(query: str) -> int | None:
    """The item of a query string this path takes (``""`` or ``item=<1-4 digits>``)."""
    if not query:
        return 0
    if (
        query.startswith("item=")
        and 6 <= len(query) <= 9
        and query[5:].isdigit()
        and query[5:].isascii()
    ):
        item = int(query[5:])
        return item if item <= MAX_ITEM else None
    return None


def _client(environ: dict) -> str | None:
    """The client address as ProxyFix(x_for=1) gives it to Flask (for the log line)."""
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return environ.get("REMOTE_ADDR")


class MemoryHits:
    def __init__(self, app: WSGIApp, lab: Lab, books: Books) -> None:
        self.app = app
        self.reads = lab.reads
        self.tier1 = lab.tier1
        self.books = books
        self.namespace = lab.settings.cache_namespace
        self.edge_seconds = lab.settings.edge_cache_seconds

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        route = _ROUTES.get(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD")
        if route is None or method not in ("GET", "HEAD") or not self.reads.memory_tier:
            return self.app(environ, start_response)
        item = _item(environ.get("QUERY_STRING", ""))
        if item is None:
            return self.app(environ, start_response)
        name, kind, build, content_type = route
        target = views.version_target(self.namespace, item)
        copy = self.tier1.peek(target.key)
        prepared = None if copy is None else copy.prepared.get(kind)
        if prepared is None:
            return self.app(environ, start_response)  # Flask serves it and prepares the bytes
        lookup = self.reads.from_memory(target)
        if lookup is None or lookup.copy is not copy:
            return self.app(environ, start_response)  # not servable now: Flask decides
        tag = responses.etag(lookup)
        if responses.not_modified(tag, environ.get("HTTP_IF_NONE_MATCH", "")):
            status, body, headers = 304, b"", []
        else:
            body = build(lookup, prepared)
            status = 200
            headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            headers += responses.edge_headers(lookup, self.edge_seconds)
        headers += responses.cache_headers(lookup, tag)
        rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        elapsed = time.perf_counter() - started
        headers.append(
            ("Server-Timing", responses.server_timing({**lookup.timings_ms, "app": elapsed * 1000}))
        )
        headers.append(("X-Request-ID", rid))
        start_response(_STATUS[status], headers)
        views.count(lookup)
        self.books.record(
            name,
            status,
            elapsed,
            lookup.metric_result,
            lookup,
            rid,
            method,
            environ.get("PATH_INFO", ""),
            lambda: _client(environ),
        )
        return [] if method == "HEAD" else [body]
