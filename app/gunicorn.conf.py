"""gunicorn settings for the lab app (read once by the master at start).

Threads, not processes, absorb the slow query: a request waiting 10 s on
PostgreSQL holds a thread, not a worker. Configuration is validated here, in
the master, so a bad variable stops start-up with one clear line instead of a
crash loop of workers.
"""

import os
import shutil
import sys

from cachelab.config import ConfigError, Settings, read_integer
from cachelab.engine.cluster import check_mode

try:
    settings = Settings.from_env()
    # REDIS_CLUSTER must match the server (not reachable yet: start, degraded).
    check_mode(settings)
    port = read_integer(os.environ, "PORT", 8000, 1, 65535)
    workers = read_integer(os.environ, "GUNICORN_WORKERS", 2, 1, 64)
    # Enough threads that waiting misses (CACHE_MISS_SLOTS) never take all of them.
    threads = settings.gunicorn_threads
    # Longer than the slowest request (statement timeout + lock wait) so a busy
    # worker is not killed; graceful_timeout lets in-flight requests finish on stop.
    timeout = read_integer(os.environ, "GUNICORN_TIMEOUT", 90, 10, 3600)
    graceful_timeout = read_integer(os.environ, "GUNICORN_GRACEFUL_TIMEOUT", 30, 1, 3600)
except ConfigError as exc:
    print(f"cachelab: invalid configuration: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)

bind = f"0.0.0.0:{port}"
worker_class = "gthread"
# Longer than Nginx's upstream keepalive_timeout, so Nginx closes first.
keepalive = 75
preload_app = False  # the app (and its pools) is created in each worker, after fork
accesslog = None  # the app writes one JSON line per request instead
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
worker_tmp_dir = "/dev/shm"
control_socket_disable = True


def on_starting(server):
    """Start with an empty metrics directory: stale files would double-count."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)


def worker_exit(server, worker):
    """In the exiting worker: drop queued refreshes, release leases, stop threads."""
    from cachelab.web.app import shutdown

    shutdown()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
