"""PostgreSQL access: one bounded connection pool per worker, client-side deadlines.

Two budgets share the pool's connections: ``DB_POOL_SIZE`` for the slow
queries (fills and background refreshes) and ``DB_CONTROL_CONNECTIONS`` for
everything short -- writes, readiness pings, the fills' row-version checks --
so a worker whose fills hold every query connection still takes writes and
answers its probes.

Why not ``psycopg2.pool.ThreadedConnectionPool``: it connects while holding
its lock (one slow connect blocks every thread), raises instead of waiting
when exhausted, and never checks a connection before handing it out. This pool
waits a bounded time for a free slot, connects outside any lock, and pings a
connection before reusing it if it sat idle, or if its server spoke while it
was idle: a server that ends a session (a restart, a failover,
``pg_terminate_backend``) sends its reason and closes the socket, which a
zero-timeout poll sees without a round trip.

Why a wait callback: ``statement_timeout`` is enforced by the server, so a
paused or unreachable server would leave a request hanging forever. Every
socket wait goes through :func:`_wait_with_deadline`, which gives up at the
calling thread's deadline; the connection is then discarded.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from ..config import Settings
from ..engine.model import SourceUnavailable

SLOW_QUERY = "SELECT slow_version()"
ITEM_QUERY = "SELECT id, payload, version, updated_at FROM slow_item(%s)"
ITEM_UPDATE = (
    "UPDATE items SET payload = %s WHERE id = %s RETURNING id, payload, version, updated_at"
)
ITEM_VERSION = "SELECT version FROM items WHERE id = %s"
MAX_ITEM_ID = "SELECT coalesce(max(id), 0) FROM items"
_REPING_AFTER_IDLE_SECONDS = 1.0
_thread = threading.local()


class DatabaseUnavailable(SourceUnavailable):
    """PostgreSQL could not answer in time: down, paused, overloaded or erroring."""


class _DeadlineExceeded(Exception):
    pass


def _wait_with_deadline(conn) -> None:
    """psycopg2 wait callback (see ``psycopg2.extras.wait_select``) with a deadline."""
    deadline = getattr(_thread, "deadline", None)
    poller = select.poll()
    registered = None
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            mask = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            mask = select.POLLOUT
        else:  # pragma: no cover - psycopg2 documents no other state
            raise psycopg2.OperationalError(f"bad poll state {state}")
        if registered != mask:
            poller.register(conn.fileno(), mask)
            registered = mask
        remaining_ms = None
        if deadline is not None:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise _DeadlineExceeded("database did not answer before the deadline")
        poller.poll(remaining_ms)


psycopg2.extensions.set_wait_callback(_wait_with_deadline)


class Database:
    """A small pool of autocommit connections to ``settings.database_url``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._slots = threading.BoundedSemaphore(settings.db_pool_size)
        self._control = threading.BoundedSemaphore(settings.db_control_connections)
        self._idle: list[tuple[psycopg2.extensions.connection, float]] = []
        self._idle_lock = threading.Lock()

    # -- public API -------------------------------------------------------
    def fetch_slow_version(self) -> str:
        """Run the slow query; raise :class:`DatabaseUnavailable` on any failure."""
        budget = self._settings.db_statement_timeout_ms / 1000 + 2.0
        with self._connection(budget) as conn, conn.cursor() as cur:
            cur.execute(SLOW_QUERY)
            row = cur.fetchone()
        if row is None:
            raise DatabaseUnavailable("slow_version() returned no row")
        return str(row[0])

    def fetch_item(self, item_id: int) -> dict | None:
        """The item as of the start of its slow query, or None if there is none."""
        budget = self._settings.db_statement_timeout_ms / 1000 + 2.0
        with self._connection(budget) as conn, conn.cursor() as cur:
            cur.execute(ITEM_QUERY, (item_id,))
            row = cur.fetchone()
        return None if row is None else _item(row)

    def update_item(self, item_id: int, payload: str) -> dict | None:
        """Commit a new payload (the table's trigger bumps ``version`` and
        ``updated_at``); the committed row, or None if there is no such item."""
        with self._connection(5.0, control=True) as conn, conn.cursor() as cur:
            cur.execute(ITEM_UPDATE, (payload, item_id))
            row = cur.fetchone()
        return None if row is None else _item(row)

    def item_version(self, item_id: int) -> int | None:
        """The row's version now (None: no such row): a primary-key lookup."""
        with self._connection(2.0, control=True) as conn, conn.cursor() as cur:
            cur.execute(ITEM_VERSION, (item_id,))
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def max_item_id(self) -> int:
        """The highest item id (0 without items): an index lookup."""
        with self._connection(2.0, control=True) as conn, conn.cursor() as cur:
            cur.execute(MAX_ITEM_ID)
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def ping(self, timeout: float = 1.0) -> None:
        """A cheap round trip for readiness checks."""
        with (
            self._connection(timeout, pool_wait=timeout, control=True) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT 1")
            cur.fetchone()

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    # -- internals --------------------------------------------------------
    @contextmanager
    def _connection(
        self, budget: float, pool_wait: float | None = None, control: bool = False
    ) -> Iterator[psycopg2.extensions.connection]:
        wait = self._settings.db_pool_wait_seconds if pool_wait is None else pool_wait
        slots = self._control if control else self._slots
        if not slots.acquire(timeout=min(wait, budget) if control else wait):
            raise DatabaseUnavailable(f"no free database connection within {wait:g}s")
        conn = None
        try:
            conn = self._checkout(budget)
            _thread.deadline = time.monotonic() + budget
            yield conn
        except (psycopg2.Error, _DeadlineExceeded) as exc:
            if conn is not None:
                conn.close()
                conn = None
            raise DatabaseUnavailable(_describe(exc)) from exc
        finally:
            _thread.deadline = None
            if conn is not None and not conn.closed:
                with self._idle_lock:
                    self._idle.append((conn, time.monotonic()))
            slots.release()

    def _checkout(self, budget: float) -> psycopg2.extensions.connection:
        while True:
            with self._idle_lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if conn.closed:
                continue
            recent = time.monotonic() - since < _REPING_AFTER_IDLE_SECONDS
            if recent and not _spoke_while_idle(conn):
                return conn
            try:
                _thread.deadline = time.monotonic() + min(budget, 1.0)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return conn
            except (psycopg2.Error, _DeadlineExceeded):
                conn.close()
        _thread.deadline = time.monotonic() + self._settings.db_connect_timeout_seconds
        conn = psycopg2.connect(
            self._settings.database_url,
            connect_timeout=self._settings.db_connect_timeout_seconds,
            options=f"-c statement_timeout={self._settings.db_statement_timeout_ms}",
            application_name="cachelab",
        )
        conn.autocommit = True
        return conn


def _spoke_while_idle(conn: psycopg2.extensions.connection) -> bool:
    """Has the server sent anything (or hung up) since the connection went idle?
    It has nothing to say to an idle session unless it is ending it (CI saw a
    503 from a connection back in the pool under a second when PostgreSQL
    restarted), so then the connection is pinged before it is handed out."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _item(row: tuple) -> dict:
    item_id, payload, version, updated_at = row
    return {
        "id": item_id,
        "version": int(version),
        "updated_at": updated_at.isoformat(),
        "payload": payload,
    }


def _describe(exc: BaseException) -> str:
    """A one-line reason without connection details (no passwords in logs)."""
    if isinstance(exc, _DeadlineExceeded):
        return "database did not answer before the deadline"
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return "statement timeout"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first_line[:200]}"
