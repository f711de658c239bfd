"""Schedules: what the checker runs, as data Hypothesis generates and shrinks.

A :class:`Schedule` is a configuration (workers, timings, bulkhead) and a list
of steps run in order by :mod:`.runner`. Requests and faults start at their
step and run concurrently with what follows; :class:`Sleep` lets time pass.
A failing schedule prints as Python (its ``repr``) and replays with
:func:`.runner.replay`.

The key space is fixed so that the database can count queries per key on its
own side (``fetch_item(id)`` does not know the invalidation mode): each item
is read in one mode only.

====  ==============  =========================================================
item  mode            why
====  ==============  =========================================================
1, 2  delete          read-your-writes; tombstones
3, 4  write-through   read-your-writes; guarded writes
5, 9  ttl             no invalidation: tier 1 and refresh windows only (9 is the
                      highest id: it bounds the table's range)
6     notify          no listener in the unit layer: like ttl
7, 8  ttl             absent rows inside the table's range (SQL may insert them)
50+   ttl             ids above the table's range (the API accepts up to 10^6)
====  ==============  =========================================================

``/api/version?item=0..2`` adds keys whose query carries no id.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from . import adapter
from .workers import TOKEN

MODES = {
    1: "delete",
    2: "delete",
    3: "write-through",
    4: "write-through",
    5: "ttl",
    6: "notify",
    9: "ttl",
}
ABSENT = (7, 8)  # rows deleted inside the table's range 1..9
OUT_OF_RANGE = 50  # first id of the floods: 50, 51, ...
RYW_MODES = frozenset({"delete", "write-through"})


def mode_of(item: int) -> str:
    return MODES.get(item, "ttl")


@dataclass(frozen=True)
class Config:
    """The settings a schedule runs with (two-tier, tracking on, short times)."""

    workers: int = 2
    lock_wait: float = 2.0  # CACHE_LOCK_WAIT_SECONDS
    lease: float = 0.6  # CACHE_LOCK_LEASE_SECONDS
    slots: tuple[int, int] = (16, 8)  # CACHE_MISS_SLOTS, CACHE_FILL_SLOTS
    db_latency: float = 0.05  # seconds per slow query
    ttl: int = 1
    local_size: int = 1024  # LOCAL_CACHE_SIZE

    def settings(self, redis_url: str, namespace: str) -> adapter.Settings:
        miss, fill = self.slots
        threads = miss + 64 + 16  # misses, followers, hits
        settings = adapter.Settings(
            database_url="postgresql://checker:checker@127.0.0.1:1/checker",
            redis_url=redis_url,
            cache_namespace=namespace,
            cache_ttl_seconds=self.ttl,
            cache_grace_seconds=3,
            cache_jitter_ratio=0.0,
            xfetch_beta=0.0,
            cache_lock_wait_seconds=self.lock_wait,
            cache_lock_lease_seconds=self.lease,
            local_cache_size=self.local_size,
            miss_slots=miss,
            fill_slots=fill,
            refresh_threads=2,
            redis_socket_timeout_ms=250,  # fewer spontaneous timeouts on a busy machine
            redis_connect_timeout_ms=100,
            breaker_cooldown_seconds=0.2,
            tracking_heartbeat_seconds=0.2,
            memory_fallback_ttl_ms=300,
            db_statement_timeout_ms=3000,
            db_connect_timeout_seconds=1,
            db_pool_wait_seconds=1.0,
            db_pool_size=fill + 2,
            follower_slots=64,
            gunicorn_threads=threads,
            redis_max_connections=threads + 2 + 2,
            write_api_token=TOKEN,
            log_summary_seconds=0,
            request_log_hit_sample=0.0,
        )
        settings.check()
        return settings


# -- steps ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Read:
    w: int
    item: int


@dataclass(frozen=True)
class Write:
    w: int
    item: int


@dataclass(frozen=True)
class Version:
    w: int
    item: int


@dataclass(frozen=True)
class Poll:
    """One client reading a key ``n`` times in a row (keeps it hot in tier 1)."""

    w: int
    item: int
    n: int


@dataclass(frozen=True)
class Session:
    """One client: a PUT through worker ``w``, then at once a GET through worker
    ``r`` (the read-your-writes probe)."""

    w: int
    r: int
    item: int


@dataclass(frozen=True)
class Writeback:
    """The item made hot in every worker's memory, then a PUT through worker
    ``w`` and at once a read back through every worker (the issue's scenario).
    ``stall``: the other workers' listeners each stall on the next invalidation
    they read (the PUT's, unless another write comes first)."""

    w: int
    item: int
    stall: bool = False


@dataclass(frozen=True)
class Stampede:
    """``n`` concurrent reads of one key spread over every worker."""

    item: int
    n: int


@dataclass(frozen=True)
class Burst:
    """``n`` concurrent reads of one key on one worker (followers of one fill)."""

    w: int
    item: int
    n: int


@dataclass(frozen=True)
class Flood:
    """``n`` concurrent reads of distinct ids outside the seeded range."""

    w: int
    n: int


@dataclass(frozen=True)
class Sleep:
    ms: int


@dataclass(frozen=True)
class Sql:
    """A row inserted or deleted directly in SQL (no trigger reaches the app)."""

    action: str  # insert | delete
    item: int


@dataclass(frozen=True)
class Fault:
    """A fault from now for ``ms`` milliseconds (``w``: the worker it hits, if any).

    ``readonly``, ``pause-write``, ``pause-all``: the node. ``kill-connections``:
    every client connection, once. ``squeeze``: volatile-lru under a small
    maxmemory; ``evict``: every key with a TTL evicted, once. ``db-slow``:
    queries take ``level`` times the lock wait; ``db-fail``: queries and writes
    fail. ``tracking-kill``: the worker's tracking connection killed by the
    server (loud); ``tracking-silent``: it goes silent (no FIN); ``tracking-
    delay``: invalidations wait ``level`` x 100 ms after they were read.
    ``jitter``: the worker's Redis commands and replies pause up to ``level``
    x 10 ms, half of the time. ``kill-worker``: the worker dies at its next
    query, holding the lease (SIGKILL). ``purge``: ``cachelab cache purge``.
    """

    kind: str
    ms: int = 0
    w: int = 0
    level: int = 1


SERVER_FAULTS = ("readonly", "pause-write", "pause-all", "kill-connections", "squeeze", "evict")
WORKER_FAULTS = ("tracking-kill", "tracking-silent", "tracking-delay", "jitter", "kill-worker")
OTHER_FAULTS = ("db-slow", "db-fail", "purge")
FAULTS = SERVER_FAULTS + WORKER_FAULTS + OTHER_FAULTS

Step = (
    Read
    | Poll
    | Session
    | Writeback
    | Write
    | Version
    | Stampede
    | Burst
    | Flood
    | Sleep
    | Sql
    | Fault
)


@dataclass(frozen=True)
class Schedule:
    config: Config
    steps: tuple[Step, ...]
    seed: int = 0  # the workers' network jitter and the database's

    def __repr__(self) -> str:
        steps = ",\n    ".join(repr(step) for step in self.steps)
        return (
            f"Schedule(\n  {self.config!r},\n  steps=(\n    {steps},\n  ),\n  seed={self.seed},\n)"
        )


# -- Hypothesis strategies -----------------------------------------------------------------
def _steps(workers: int) -> st.SearchStrategy[Step]:
    w = st.integers(0, workers - 1)
    items = st.sampled_from((1, 2, 3, 4, 5, 6, 7, 8, 9, OUT_OF_RANGE))
    promised = st.sampled_from((1, 2, 3, 4))
    writable = st.sampled_from(tuple(MODES))
    fault = st.builds(
        Fault,
        kind=st.sampled_from(FAULTS),
        ms=st.integers(50, 700),
        w=w,
        level=st.integers(1, 3),
    )
    # Weights by repetition: the probes of the promises (sessions, write-backs,
    # stampedes) and faults come often; plain reads fill the gaps.
    return st.one_of(
        st.builds(Read, w=w, item=items),
        st.builds(Poll, w=w, item=promised, n=st.integers(2, 6)),
        st.builds(Poll, w=w, item=items, n=st.integers(2, 6)),
        st.builds(Session, w=w, r=w, item=promised),
        st.builds(Session, w=w, r=w, item=writable),
        st.builds(Writeback, w=w, item=promised),
        st.builds(Writeback, w=w, item=promised, stall=st.just(True)),
        st.builds(Write, w=w, item=writable),
        st.builds(Version, w=w, item=st.integers(0, 2)),
        st.builds(Stampede, item=items, n=st.integers(2, 8)),
        st.builds(Burst, w=w, item=items, n=st.integers(2, 8)),
        st.builds(Flood, w=w, n=st.integers(2, 6)),
        st.builds(Sleep, ms=st.integers(0, 250)),
        st.builds(Sleep, ms=st.integers(0, 250)),
        st.builds(Sql, action=st.sampled_from(("insert", "delete")), item=st.sampled_from(ABSENT)),
        fault,
        fault,
        fault,
        fault,
    )


@st.composite
def schedules(draw: st.DrawFn, max_steps: int = 24) -> Schedule:
    config = Config(
        workers=draw(st.integers(2, 3)),
        lock_wait=draw(st.sampled_from((2.0, 0.4))),
        lease=draw(st.sampled_from((0.6, 1.2))),
        slots=draw(st.sampled_from(((16, 8), (4, 2)))),
        db_latency=draw(st.sampled_from((0.05, 0.0, 0.2))),
        local_size=draw(st.sampled_from((1024, 2))),
    )
    steps = draw(st.lists(_steps(config.workers), min_size=1, max_size=max_steps))
    return Schedule(config, tuple(steps), seed=draw(st.integers(0, 2**16)))


__all__ = [
    "Burst",
    "Config",
    "Fault",
    "Flood",
    "Poll",
    "Read",
    "Schedule",
    "Session",
    "Sleep",
    "Sql",
    "Stampede",
    "Version",
    "Write",
    "Writeback",
    "mode_of",
    "schedules",
]
