"""The baseline of ``python -m loadtest.bench hits``: what a user would write instead.

A minimal Flask app with Flask-Caching's ``@cache.cached`` on a Redis backend,
in front of the same ``SELECT slow_version()``: on a hit Flask-Caching returns
the whole response it pickled into Redis (one GET per request); at expiry
every request that comes in before the first one has refilled the key runs
the query (no single flight, no stale serving). Run like the lab's app: gunicorn,
2 workers x 4 threads (gthread), 1 CPU. Settings: ``DATABASE_URL``,
``REDIS_URL``, ``CACHE_TTL_SECONDS``.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, jsonify
from flask_caching import Cache
from psycopg2.pool import ThreadedConnectionPool

app = Flask(__name__)
cache = Cache(
    app,
    config={
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": os.environ["REDIS_URL"],
        "CACHE_KEY_PREFIX": "baseline:",
        "CACHE_DEFAULT_TIMEOUT": int(os.environ.get("CACHE_TTL_SECONDS", "10")),
    },
)
_pool: ThreadedConnectionPool | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadedConnectionPool:
    """One pool per worker, made at its first query (after gunicorn's fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadedConnectionPool(1, 4, os.environ["DATABASE_URL"], connect_timeout=3)
        return _pool


@app.get("/api/version")
@cache.cached()
def version():
    connections = pool()
    conn = connections.getconn()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT slow_version()")
            row = cur.fetchone()
            text = row[0] if row else None
    finally:
        connections.putconn(conn)
    return jsonify(version=text, item=0, source="database")


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")
