"""The running engine, as the blueprints see it: one bundle, one accessor.

The app factory (:func:`cachelab.web.app.create_app`) wires the engine's
collaborators into a :class:`Lab` and keeps it on the Flask app; blueprints
reach it through :func:`lab` only, never through each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..config import Settings
from ..engine.fills import Fills
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


@dataclass(frozen=True)
class Lab:
    settings: Settings
    reads: ReadPath
    writer: Writer
    tier1: Tier1
    tracking: TrackingListener | ClusterTracking
    store: RedisStore
    fills: Fills
    bulkhead: Bulkhead
    jobs: BackgroundJobs
    db: Database
    sources: LabSources
    freshness: Freshness
    notify: NotifyListener

    def start(self) -> None:
        """Start the background threads (after fork: gunicorn calls create_app per worker)."""
        self.store.start()
        self.tracking.start()
        self.notify.start()

    def shutdown(self) -> None:
        """Worker exit: drop queued refreshes, release leases, stop listening."""
        self.jobs.shutdown()
        self.fills.close()
        self.tracking.close()
        self.store.close()
        self.notify.close()

    def kill(self) -> None:
        """As SIGKILL would leave things: leases neither released nor renewed, no
        more listening (the randomized checker kills workers with it)."""
        self.fills.close(release=False)
        self.jobs.shutdown()
        self.tracking.close()
        self.store.close()
        self.notify.close()


def lab() -> Lab:
    return current_app.extensions["cachelab"]
