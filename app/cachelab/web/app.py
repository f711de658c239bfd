"""Caching performance lab: a Flask app reading slow PostgreSQL queries through Redis."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import logs
from ..config import Settings
from ..engine.notify import Freshness, NotifyListener
from ..engine.service import CacheService
from ..engine.store import RedisStore
from ..postgres.database import Database
from . import dashboard, errors, hitpath, items, requestlog, views

__all__ = ["create_app", "shutdown"]

_running: list[tuple[CacheService, NotifyListener, requestlog.Summary]] = []


def create_app(
    settings: Settings | None = None, db: Database | None = None, store: RedisStore | None = None
) -> Flask:
    """Application factory: gunicorn calls it in each worker, after fork, so
    every worker owns its Redis pool, database pool, breaker and threads.
    Tests pass their own settings, database or store."""
    settings = settings or Settings.from_env()
    logs.configure()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Exactly one proxy (Nginx) sits in front of the app.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    service = CacheService(settings, store or RedisStore(settings), db or Database(settings))
    summary = requestlog.Summary(settings.log_summary_seconds)
    freshness = Freshness()
    listener = NotifyListener(service, freshness)
    app.extensions["cachelab"] = service
    app.extensions["cachelab.freshness"] = freshness
    app.register_blueprint(views.bp)
    app.register_blueprint(items.bp)
    app.register_blueprint(dashboard.bp)
    errors.register(app)
    books = requestlog.register(app, summary, settings.request_log_hit_sample)
    # Outermost: tier-1 hits are answered before Flask (see cachelab.web.hitpath).
    app.wsgi_app = hitpath.MemoryHits(app.wsgi_app, service, books)  # type: ignore[method-assign]
    service.start()
    listener.start()
    summary.start()
    _running.append((service, listener, summary))
    logging.getLogger(__name__).info(
        "app ready", extra={"strategy": settings.cache_strategy, "ttl": settings.cache_ttl_seconds}
    )
    return app


def shutdown() -> None:
    """Worker exit (gunicorn's worker_exit hook): drop queued refreshes, release
    leases, stop the listeners, write the last summary line."""
    while _running:
        service, listener, summary = _running.pop()
        service.shutdown()
        listener.close()
        summary.close()
