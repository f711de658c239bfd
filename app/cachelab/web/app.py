"""Application factory: gunicorn calls it in each worker, after fork, so every
worker owns its Redis pool, database pool, breaker, tier 1 and threads."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import logs
from ..config import Settings
from ..engine.cluster import ClusterStore, Topology
from ..engine.fills import Fills
from ..engine.keys import prefix
from ..engine.reads import ReadPath
from ..engine.store import RedisStore
from ..engine.tier1 import Tier1
from ..engine.tracking import ClusterTracking, TrackingListener
from ..engine.writes import Writer
from ..postgres.database import Database
from ..postgres.notify import Freshness, NotifyListener
from ..postgres.sources import LabSources
from ..resilience.background import BackgroundJobs
from ..resilience.bulkhead import Bulkhead
from . import dashboard, errors, hitpath, items, requestlog, views
from .context import Lab

__all__ = ["build_lab", "create_app", "shutdown"]

_running: list[tuple[Lab, requestlog.Summary]] = []


def build_lab(
    settings: Settings,
    db: Database | None = None,
    store: RedisStore | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    wall: Callable[[], float] = time.time,
) -> Lab:
    """Wire the engine's collaborators (nothing starts until :meth:`Lab.start`)."""
    rng = rng or random.Random()
    db = db or Database(settings)
    store = store or (ClusterStore(settings) if settings.redis_cluster else RedisStore(settings))
    tier1 = Tier1(
        settings.local_cache_size,
        settings.local_cache_bytes,
        settings.memory_fallback_ttl_ms / 1000,
        settings.tracking_heartbeat_seconds,
        clock,
    )
    tracking: TrackingListener | ClusterTracking
    if isinstance(store, ClusterStore):
        listeners = ClusterTracking(
            store.node_client,
            prefix(settings.cache_namespace),
            tier1,
            settings.tracking_heartbeat_seconds,
            enabled=settings.cache_tracking == "auto",
        )

        def topology_changed(old: Topology | None, new: Topology) -> None:
            """A change of the shard map, treated like a lost connection for the
            keys it touches; then the listeners follow the nodes."""
            if old is None or old.members != new.members:
                tier1.topology_changed()
            else:
                tier1.slots_moved(new.moved_since(old))
            listeners.on_topology(frozenset(n.name for n in new.nodes))

        store.shard_map.subscribe(topology_changed)
        tracking = listeners
    else:
        tracking = TrackingListener(
            store.client,
            prefix(settings.cache_namespace),
            tier1,
            settings.tracking_heartbeat_seconds,
            enabled=settings.cache_tracking == "auto",
        )
    jobs = BackgroundJobs(settings.refresh_threads, settings.refresh_queue, clock)
    bulkhead = Bulkhead(settings.miss_slots, settings.fill_slots, settings.follower_slots)
    sources = LabSources(db, clock)
    fills = Fills(settings, store, tier1, sources, bulkhead, jobs, clock, rng, wall)
    reads = ReadPath(settings, store, tier1, fills, clock, rng)
    writer = Writer(settings, store, tier1, db, rng, wall)
    freshness = Freshness()
    notify = NotifyListener(settings, writer, sources, freshness)
    return Lab(
        settings,
        reads,
        writer,
        tier1,
        tracking,
        store,
        fills,
        bulkhead,
        jobs,
        db,
        sources,
        freshness,
        notify,
    )


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    store: RedisStore | None = None,
    lab: Lab | None = None,
) -> Flask:
    """The Flask app of one worker. Tests pass their own settings, database, store
    or a whole :class:`Lab` (wired with their clock and random source)."""
    settings = settings or (lab.settings if lab else Settings.from_env())
    logs.configure()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Exactly one proxy (Nginx) sits in front of the app.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    lab = lab or build_lab(settings, db, store)
    summary = requestlog.Summary(settings.log_summary_seconds)
    app.extensions["cachelab"] = lab
    app.register_blueprint(views.bp)
    app.register_blueprint(items.bp)
    app.register_blueprint(dashboard.bp)
    errors.register(app)
    books = requestlog.register(app, summary, settings.request_log_hit_sample)
    # Outermost: tier-1 hits are answered before Flask (see cachelab.web.hitpath).
    app.wsgi_app = hitpath.MemoryHits(app.wsgi_app, lab, books)  # type: ignore[method-assign]
    lab.start()
    summary.start()
    _running.append((lab, summary))
    logging.getLogger(__name__).info(
        "app ready", extra={"strategy": settings.cache_strategy, "ttl": settings.cache_ttl_seconds}
    )
    return app


def shutdown() -> None:
    """Worker exit (gunicorn's worker_exit hook): drop queued refreshes, release
    leases, stop the listeners, write the last summary line."""
    while _running:
        lab, summary = _running.pop()
        lab.shutdown()
        summary.close()
