"""One checker per promise, over a recorded history (and the database's own log).

Each checker states its rule and the exceptions the documentation grants
(docs/caching.md); anything else is a violation. Times come from one
monotonic clock; :data:`MARGIN` absorbs thread scheduling on a busy 2-core
machine where a rule involves a documented duration.

``read-your-writes``
    ``delete`` and ``write-through``: if a PUT whose cache action promises it
    (:data:`.adapter.PROMISED_ACTIONS`) completed before a GET of that key was
    invoked, the GET returns that version or a newer one. Granted: a worker's
    last copy served while Redis is unavailable (``source=local``, the
    documented degradation); a tier-1 copy while the worker's tracking
    connection is silently dead, for at most the heartbeat (docs: the heartbeat
    bounds it).
``tombstone``
    ``delete``: after a PUT's tombstone, no value older than it is *stored*:
    no read served from Redis or tier 1 returns an older version (also after
    eviction, failover or kills); the report names the fill that read the row
    before the PUT.
``one-query``
    Counted by the database: per item, no query starts while another query of
    that item is running (its lease is held or renewed), and none within one
    refresh window (the TTL) after one ended, unless a write or SQL change of
    that row, a failed or killed earlier query, or a cache outage (READONLY,
    CLIENT PAUSE, killed connections, eviction, purge; plus the breaker's
    cooldown) explains it.
``not-found``
    Absent rows (issue 17 item 4): an id above the table's range never reaches
    the database; an absent id inside it is queried at most once per
    negative-caching time (:func:`.adapter.not_found_seconds`; same
    explanations as ``one-query``).
``no-5xx``
    No 500/502/504 or other 5xx, no exception, no hang, no unexpected 4xx, no
    404 for a row that exists, every live worker back to normal after the
    faults. Documented 503s are counted apart and must be explained:
    ``database_unavailable`` by a database failure; ``overloaded`` by a flood
    of at least ``CACHE_FILL_SLOTS`` other keys in flight on that worker, or of
    ``CACHE_FOLLOWER_SLOTS`` requests for its own key;
    ``fill-timeout`` by a wait of ``CACHE_LOCK_WAIT_SECONDS`` for a fill.
``tier-1``
    A copy served from a worker's memory is never older than a value Redis is
    known (from the history) to have held before the read began: a promised
    write, or a read served from Redis. Granted: the silent-connection bound
    (as above); for keys without read-your-writes, the documented fallback
    (``MEMORY_FALLBACK_TTL_MS``) while that worker's tracking was being lost.
``purge``
    After ``cachelab cache purge`` returned, no read is served (from Redis or
    tier 1) with an entry generation (``ETag``) that existed before it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import adapter
from .fakedb import ROWS, FakeDatabase, Query
from .history import CRASHED, ERROR, NEMESIS, OK, SQL, UNKNOWN, History, Op
from .schedule import RYW_MODES, Config, mode_of

MARGIN = 0.25  # seconds of scheduling noise allowed around documented durations
PROMISES = ("read-your-writes", "tombstone", "one-query", "not-found", "no-5xx", "tier-1", "purge")
ROW_ITEMS = frozenset(ROWS)  # rows that exist throughout (schedule.MODES)
TOP = max(ROWS)  # the highest id: the table's range
# Faults that make Redis unavailable to the engine (documented: degraded mode).
DEGRADING = ("readonly", "pause-write", "pause-all", "kill-connections", "squeeze")
TRACKING_LOSSES = ("tracking-kill", "tracking-silent", "kill-connections", "readonly")


@dataclass(frozen=True)
class Violation:
    promise: str
    text: str
    ops: tuple[Op, ...] = ()

    def describe(self, history: History) -> str:
        lines = [f"[{self.promise}] {self.text}"]
        lines += ["    " + op.line(history.origin) for op in self.ops]
        return "\n".join(lines)


@dataclass
class Context:
    settings: adapter.Settings
    config: Config
    history: History
    db: FakeDatabase
    killed: dict[str, float]

    @property
    def lock_wait(self) -> float:
        return float(self.settings.cache_lock_wait_seconds)

    @property
    def heartbeat_bound(self) -> float:
        return self.settings.tracking_heartbeat_seconds + MARGIN

    @property
    def recovery(self) -> float:
        """How long after an outage the engine may still be degraded: the
        breaker's cooldown, a socket timeout and the scheduling margin."""
        settings = self.settings
        return settings.breaker_cooldown_seconds + settings.redis_socket_timeout_ms / 1000 + MARGIN

    def windows(self, kinds: Iterable[str], worker: str | None = None) -> list[tuple[float, float]]:
        chosen = set(kinds)
        return [
            (op.invoke, op.end)
            for op in self.history.faults()
            if op.kind in chosen and (worker is None or op.target in (None, worker))
        ]


def _overlaps(windows: list[tuple[float, float]], start: float, end: float, after: float) -> bool:
    return any(w_start <= end and start <= w_end + after for w_start, w_end in windows)


def _answers(history: History, kind: str = "read") -> list[Op]:
    return [op for op in history.ops if op.kind == kind and op.outcome == OK]


def _promised_writes(history: History) -> dict[str, list[Op]]:
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in _answers(history, "write"):
        if op.detail in adapter.PROMISED_ACTIONS:
            writes[op.key].append(op)
    return writes


def _silent_grace(ctx: Context, read: Op, since: float) -> bool:
    """The read came from a worker whose tracking connection had gone silent
    before ``since`` (the write, give or take a little), and within the heartbeat
    bound of that: the documented staleness of a silently dead connection."""
    return any(
        since >= start - 0.05 and read.invoke <= start + ctx.heartbeat_bound
        for start, _ in ctx.windows(("tracking-silent",), read.process)
    )


# -- read-your-writes ------------------------------------------------------------------------
def _older_than_written(ctx: Context, read: Op, writes: dict[str, list[Op]]) -> Op | None:
    """The newest promised write of ``read``'s key that completed before it was
    invoked, if ``read`` returned an older version (and no documented grace
    covers it)."""
    before = [w for w in writes.get(read.key, ()) if w.end < read.invoke]
    if not before or read.value is None:
        return None
    newest = max(before, key=lambda w: w.value or 0)
    if read.value >= (newest.value or 0):
        return None
    if read.source == "memory" and _silent_grace(ctx, read, newest.end):
        return None
    return newest


def read_your_writes(ctx: Context) -> list[Violation]:
    writes = _promised_writes(ctx.history)
    found = []
    for read in _answers(ctx.history):
        if read.mode not in RYW_MODES or read.source == "local":
            continue
        newest = _older_than_written(ctx, read, writes)
        if newest is not None:
            lag = (read.invoke - newest.end) * 1000
            found.append(
                Violation(
                    "read-your-writes",
                    f"{read.key}: read v{read.value} ({read.cache}/{read.source}) "
                    f"{lag:.1f} ms after a PUT of v{newest.value} returned",
                    (newest, read),
                )
            )
    return found


# -- tombstones -------------------------------------------------------------------------------
def tombstone(ctx: Context) -> list[Violation]:
    writes = _promised_writes(ctx.history)
    found = []
    for read in _answers(ctx.history):
        if read.mode != "delete" or read.source not in ("redis", "memory"):
            continue
        newest = _older_than_written(ctx, read, writes)
        if newest is None:
            continue
        fills = [
            q
            for q in ctx.db.item_queries(read.item or 0)
            if q.start < newest.invoke and q.version == read.value
        ]
        cause = (
            f"; a query that read v{read.value} at {_at(ctx, fills[-1].start)} "
            "(before the PUT) was stored"
            if fills
            else ""
        )
        found.append(
            Violation(
                "tombstone",
                f"{read.key}: v{read.value} served from {read.source} after the tombstone of "
                f"v{newest.value}{cause}",
                (newest, read),
            )
        )
    return found


# -- one query per key ----------------------------------------------------------------------
def one_query(ctx: Context) -> list[Violation]:
    found = []
    for item in sorted(ROW_ITEMS):
        queries = ctx.db.item_queries(item)
        found += _repeats(ctx, "one-query", item, queries, lambda _item, _q: ctx.config.ttl)
    return found


def not_found(ctx: Context) -> list[Violation]:
    """Absent rows: ids above the table's range never reach the database; an
    absent id inside it is queried at most once per negative-caching time --
    while it is absent: once a SQL insert made it a row, a row's TTL applies."""
    found = []
    absent_window = adapter.not_found_seconds(ctx.settings)

    def window(item: int, earlier: Query) -> float:
        return ctx.config.ttl if _existed(ctx, item, earlier.start) else absent_window

    for item in sorted({q.item for q in ctx.db.queries if q.item is not None} - ROW_ITEMS):
        queries = ctx.db.item_queries(item)
        if item > TOP:
            failing = ctx.windows(("db-fail",))
            found += [
                Violation(
                    "not-found",
                    f"item {item} is above the table's range 1..{TOP}, yet "
                    f"{query.worker} ran its slow query at {_at(ctx, query.start)}",
                )
                for query in queries
                # a database that fails cannot say where its range ends: the query decides
                if not _overlaps(failing, query.start, query.start, MARGIN)
            ]
        else:
            found += _repeats(ctx, "not-found", item, queries, window)
    return found


def _existed(ctx: Context, item: int, moment: float) -> bool:
    """Did ``item``'s row exist at ``moment`` (its last commit before then an
    insert or an update)? Items absent from the start have no commit until an
    insert."""
    before = [c for c in ctx.db.commits if c.item == item and c.at <= moment]
    if not before:
        return item in ROW_ITEMS
    return max(before, key=lambda c: c.at).kind != "delete"


def _repeats(
    ctx: Context,
    promise: str,
    item: int,
    queries: list[Query],
    window: Callable[[int, Query], float],
) -> list[Violation]:
    """``window(item, earlier)``: the time after ``earlier`` ended within which
    another query of ``item`` needs a reason."""
    queries = sorted(queries, key=lambda q: q.start)
    found = []
    for later_index, later in enumerate(queries):
        for earlier in queries[:later_index]:
            problem = _second_query(ctx, item, earlier, later, window(item, earlier))
            if problem:
                found.append(Violation(promise, problem))
                break
    return found


def _second_query(
    ctx: Context, item: int, earlier: Query, later: Query, window: float
) -> str | None:
    """Why ``later`` may run although ``earlier`` ran (None), or the violation."""
    ended = earlier.end if earlier.end is not None else float("inf")
    running = later.start < ended
    if not running and later.start >= ended + window - MARGIN:
        return None  # the next refresh window
    if any(earlier.start <= c.at <= later.start for c in ctx.db.commits if c.item == item):
        return None  # a write or SQL change: the engine must read the row again
    recovery = ctx.recovery
    degrading = ctx.windows(DEGRADING)
    if _overlaps(degrading, later.start, later.start, recovery) or _degraded(ctx, later):
        return None  # Redis unavailable when it started: degraded mode, once per worker
    if _overlaps(ctx.windows(("purge",)), earlier.start - recovery, later.start, 0):
        return None  # an operator deleted every entry and lease (taken just before its query)
    if running:
        lease = ctx.settings.cache_lock_lease_seconds
        lapsing = [(a, b) for a, b in degrading if b - a >= lease / 3 - MARGIN / 5]
        if _overlaps(lapsing, earlier.start, later.start, 0):
            return None  # no renewal could reach Redis for a third of the lease: it may lapse
        if _overlaps(ctx.windows(("evict",)), later.start, later.start, recovery):
            return None  # the instant of "evict" may refuse a write (OOM)
        if "evicted-lease" in adapter.OPEN_DEFECTS and _overlaps(
            ctx.windows(("evict", "squeeze")), earlier.start, later.start, 0
        ):
            return None  # an open defect, tracked by its named test (adapter.OPEN_DEFECTS)
        return (
            f"item {item} ({mode_of(item)}): {later.worker} started a query at "
            f"{_at(ctx, later.start)} while {earlier.worker}'s (started "
            f"{_at(ctx, earlier.start)}) was still running, its lease held or renewed"
        )
    if earlier.outcome != OK:
        return None  # it stored nothing
    killed = ctx.killed.get(earlier.worker)
    if killed is not None and killed <= later.start:
        return None  # its worker may have died before storing it
    if _overlaps(degrading, earlier.start, ended, recovery) or _unstored(ctx, earlier):
        return None  # its store failed (the engine said so) or may have
    if _overlaps(ctx.windows(("squeeze", "evict")), earlier.start, later.start, 0):
        return None  # the entry may have been evicted
    return (
        f"item {item} ({mode_of(item)}): {later.worker} queried at {_at(ctx, later.start)}, "
        f"{(later.start - ended) * 1000:.0f} ms after {earlier.worker}'s query ended "
        f"(refresh window {window:g} s), with nothing in between to explain it"
    )


def _degraded(ctx: Context, query: Query) -> bool:
    """The engine itself answered a read of that worker as degraded (BYPASS: Redis
    unavailable, e.g. a timeout on a busy machine) around the query's start."""
    return any(
        op.process == query.worker
        and op.cache == "BYPASS"
        and op.invoke - ctx.recovery <= query.start <= op.end + ctx.recovery
        for op in ctx.history.ops
    )


def _unstored(ctx: Context, query: Query) -> bool:
    """The read that ran ``query`` said its answer was not stored in Redis: a
    degraded load (BYPASS, kept as the worker's copy only), or a MISS whose write
    Redis refused or failed. The next read queries again."""
    return any(
        op.process == query.worker
        and op.item == query.item
        and op.source == "database"
        and (op.cache == "BYPASS" or (op.cache == "MISS" and not op.stored))
        and op.detail != "collapsed"
        and op.invoke <= query.start
        and (query.end or 0) <= op.end
        for op in ctx.history.ops
    )


def _at(ctx: Context, moment: float) -> str:
    return f"+{(moment - ctx.history.origin) * 1000:.1f} ms"


# -- no 5xx --------------------------------------------------------------------------------
def no_5xx(ctx: Context) -> list[Violation]:
    found = []
    history = ctx.history
    failures = ctx.windows(("db-fail",))
    for op in history.ops:
        if op.process in (NEMESIS, SQL) or op.outcome == CRASHED:
            continue
        if op.outcome in (ERROR, UNKNOWN):
            found.append(Violation("no-5xx", f"{op.kind} {op.key}: {op.outcome}", (op,)))
        elif op.status == 503:
            code = op.detail.split("/")[0]
            if code == "database_unavailable" and _overlaps(failures, op.invoke, op.end, MARGIN):
                continue
            if code == "overloaded" and (
                _flood_in_flight(ctx, op) >= ctx.settings.fill_slots
                or _followers_in_flight(ctx, op) >= adapter.follower_slots(ctx.settings)
            ):
                continue
            if op.detail.endswith("fill-timeout") and _waited_for_a_fill(ctx, op):
                continue  # documented: a waiter answers 503 at CACHE_LOCK_WAIT_SECONDS
            found.append(
                Violation(
                    "no-5xx",
                    f"{op.kind} {op.key}: 503 {op.detail} with "
                    f"{_flood_in_flight(ctx, op)} distinct key(s) in flight on {op.process} "
                    f"and no database failure",
                    (op,),
                )
            )
        elif op.status == 404 and op.kind == "read" and _row_existed(ctx, op):
            found.append(Violation("no-5xx", f"{op.key}: 404 for a row that exists", (op,)))
        elif op.status is not None and 400 <= op.status < 500 and op.status != 404:
            found.append(Violation("no-5xx", f"{op.key}: unexpected {op.status}", (op,)))
    return found


def _flood_in_flight(ctx: Context, op: Op) -> int:
    """Distinct other keys read on ``op``'s worker while it was in flight (the
    refusal happens somewhere inside it)."""
    return len(
        {
            other.key
            for other in ctx.history.ops
            if other.process == op.process
            and other.kind in ("read", "version")
            and other.key != op.key
            and other.invoke < op.end
            and op.invoke < other.end
        }
    )


def _followers_in_flight(ctx: Context, op: Op) -> int:
    """Other reads of ``op``'s key on its worker in flight when it was invoked."""
    return sum(
        1
        for other in ctx.history.ops
        if other.process == op.process
        and other.key == op.key
        and other.index != op.index
        and other.invoke <= op.invoke < other.end
    )


def _waited_for_a_fill(ctx: Context, op: Op) -> bool:
    """``op`` joined, in its worker, a wait for that key's fill that began at
    least CACHE_LOCK_WAIT_SECONDS before it ended (a follower shares its
    leader's answer)."""
    began = min(
        (
            other.invoke
            for other in ctx.history.ops
            if other.process == op.process
            and other.key == op.key
            and other.kind == op.kind
            and other.invoke <= op.invoke < other.end
        ),
        default=op.invoke,
    )
    return op.end - began >= ctx.lock_wait - MARGIN


def _row_existed(ctx: Context, op: Op) -> bool:
    item = op.item or 0
    if item not in ROW_ITEMS:
        return False
    changes = [c for c in ctx.db.commits if c.item == item and c.kind in ("insert", "delete")]
    if not changes:
        return ctx.db.version_of(item) is not None
    # a row inserted or deleted by SQL: only judged if it existed the whole time
    return False


# -- tier 1 -----------------------------------------------------------------------------------
def tier_1(ctx: Context) -> list[Violation]:
    history = ctx.history
    newer_in_redis: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.outcome != OK or op.value is None:
            continue
        if (op.kind == "write" and op.detail in adapter.PROMISED_ACTIONS) or (
            op.kind in ("read", "version") and op.source == "redis"
        ):
            newer_in_redis[op.key].append(op)
    fallback = ctx.settings.memory_fallback_ttl_ms / 1000
    found = []
    for read in history.ops:
        if read.outcome != OK or read.source != "memory" or read.value is None:
            continue
        evidence = [
            e
            for e in newer_in_redis.get(read.key, ())
            if e.end < read.invoke
            and (e.value or 0) > read.value
            and not _went_back(history, read, e)
        ]
        if not evidence:
            continue
        first = min(evidence, key=lambda e: e.end)
        if _silent_grace(ctx, read, first.end):
            continue
        if read.mode not in RYW_MODES and _tracking_lost(ctx, read, fallback):
            continue
        found.append(
            Violation(
                "tier-1",
                f"{read.key}: {read.process} served v{read.value} from memory "
                f"{(read.invoke - first.end) * 1000:.1f} ms after Redis was seen holding "
                f"v{first.value}",
                (first, read),
            )
        )
    return found


def _went_back(history: History, read: Op, evidence: Op) -> bool:
    """Redis (or a fill) was seen with the copy's older value after the evidence:
    Redis itself went back (eviction, a lock-timeout fill), which is another
    checker's business; this copy may be a faithful one."""
    return any(
        o.key == read.key
        and o.outcome == OK
        and o.value == read.value
        and o.source in ("redis", "database")
        and evidence.end < o.end
        and o.invoke < read.invoke
        for o in history.ops
    )


def _tracking_lost(ctx: Context, read: Op, fallback: float) -> bool:
    """The worker's tracking connection was being lost or re-established (then
    tier 1 serves a copy for at most the fallback TTL, documented)."""
    settings = ctx.settings
    reconnect = settings.tracking_heartbeat_seconds + 1.0 + fallback + MARGIN
    return _overlaps(
        ctx.windows(TRACKING_LOSSES, read.process), read.invoke, read.invoke, reconnect
    )


# -- purge --------------------------------------------------------------------------------------
def purge(ctx: Context) -> list[Violation]:
    history = ctx.history
    found = []
    fallback = ctx.settings.memory_fallback_ttl_ms / 1000
    for done in (op for op in history.faults() if op.kind == "purge"):
        before = {
            op.etag
            for op in history.ops
            if op.etag and op.outcome == OK and op.end < done.invoke and op.kind != "write"
        }
        for read in history.ops:
            if (
                read.outcome == OK
                and read.invoke > done.end
                and read.etag in before
                and read.source in ("redis", "memory")
                and not (read.mode not in RYW_MODES and _tracking_lost(ctx, read, fallback))
            ):
                found.append(
                    Violation(
                        "purge",
                        f"{read.key}: {read.process} served an entry purged at "
                        f"{_at(ctx, done.invoke)} ({read.cache}/{read.source}, {read.etag})",
                        (done, read),
                    )
                )
    return found


CHECKERS: dict[str, Callable[[Context], list[Violation]]] = {
    "read-your-writes": read_your_writes,
    "tombstone": tombstone,
    "one-query": one_query,
    "not-found": not_found,
    "no-5xx": no_5xx,
    "tier-1": tier_1,
    "purge": purge,
}


def check_all(ctx: Context, promises: Iterable[str] = PROMISES) -> list[Violation]:
    found: list[Violation] = []
    for name in promises:
        found += CHECKERS[name](ctx)
    return found
