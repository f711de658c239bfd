"""Caching performance lab: a Flask app reading a slow PostgreSQL query through Redis.

The application factory is :func:`cachelab.web.app.create_app` (gunicorn:
``cachelab.web.app:create_app()``); ``cachelab`` on the command line is :mod:`cachelab.cli`.
"""
