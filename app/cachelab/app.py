"""Caching performance lab: a Flask app reading a slow PostgreSQL query through Redis."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import dashboard, errors, logs, requestlog, views
from .cache import CacheService
from .config import Settings
from .db import Database
from .redis_store import RedisStore

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: gunicorn calls it in each worker, after fork, so
    every worker owns its Redis pool, database pool and breaker."""
    settings = settings or Settings.from_env()
    logs.configure()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Exactly one proxy (Nginx) sits in front of the app.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)
    db = Database(settings)
    store = RedisStore(settings)
    app.extensions["cachelab"] = CacheService(settings, store, db)
    app.register_blueprint(views.bp)
    app.register_blueprint(dashboard.bp)
    errors.register(app)
    requestlog.register(app)
    logging.getLogger(__name__).info(
        "app ready", extra={"strategy": settings.cache_strategy, "ttl": settings.cache_ttl_seconds}
    )
    return app
