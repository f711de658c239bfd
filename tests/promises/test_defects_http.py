"""Issue 17's defects at the edges: the HTTP API, the metrics, the database pool.

Each docstring names the defect the test caught on the old engine; a test
is a strict ``xfail`` while the engine still has its defect.
"""

from __future__ import annotations

import datetime
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from . import adapter

pytestmark = pytest.mark.unit


def test_a_unicode_digit_as_item_id_is_a_400(lab):
    """Old engine (issue 17): '²'.isdigit() is true and int('²') fails: /api/items/%C2%B2 answers
    500."""
    worker = lab.worker()
    read = worker.client().get("/api/items/%C2%B2")
    write = worker.client().put(
        "/api/items/%C2%B2",
        json={"payload": "x"},
        headers={"Authorization": f"Bearer {worker.settings.write_api_token}"},
    )
    assert (read.status_code, write.status_code) == (400, 400)


def test_a_database_unavailable_answer_counts_in_the_hit_ratio(lab, db):
    """Old engine (issue 17): 503 database_unavailable is left out of the hit ratio's denominator,
    against its definition in docs/caching.md (every request to the lookup routes)."""
    worker = lab.worker()
    lab.version(worker, 1)
    before = lookups(worker)
    assert lab.version(worker, 1).status == 200  # a hit
    db.failing = True
    assert lab.version(worker, 2).detail == "database_unavailable"  # a cold key: 503
    counted = lookups(worker) - before
    assert counted == 2, f"2 requests to /api/version, {counted:g} counted by the hit ratio"


def lookups(worker) -> float:
    """Every lookup cachelab_cache_requests_total counts (the hit ratio's denominator)."""
    body = worker.client().get("/metrics").get_data(as_text=True)
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "cachelab_cache_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


class GatedDriver:
    """psycopg2.connect for the real pool: every slow item query waits on a gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.slow = threading.Semaphore(0)  # released when a slow query starts

    def connect(self, *args, **kwargs):  # noqa: ANN002, ANN003 - psycopg2's signature
        return _Connection(self)


class _Connection:
    closed = 0
    autocommit = False

    def __init__(self, driver: GatedDriver) -> None:
        self.driver = driver
        # A socket for the pool's idle check, which the "server" never writes to.
        self._socket, self._server_end = socket.socketpair()

    def fileno(self) -> int:
        return self._socket.fileno()

    def cursor(self) -> _Cursor:
        return _Cursor(self.driver)

    def close(self) -> None:
        self.closed = 1
        self._socket.close()
        self._server_end.close()


class _Cursor:
    def __init__(self, driver: GatedDriver) -> None:
        self.driver = driver
        self.row: tuple = ()

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: tuple = ()) -> None:
        now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        if "slow_item" in sql:
            self.driver.slow.release()
            self.driver.gate.wait(10)
            self.row = (params[0], "p", 1, now)
        elif sql.lstrip().upper().startswith("UPDATE"):
            self.row = (params[1], params[0], 2, now)
        else:
            self.row = (1,)

    def fetchone(self) -> tuple:
        return self.row


def test_writes_and_readiness_do_not_wait_for_the_fills(lab, monkeypatch):
    """Old engine (issue 17): PUTs and the readiness ping share the fill slots' database pool:
    while fills and refreshes hold it, a write or /readyz waits and fails."""
    settings = replace(
        lab.settings, fill_slots=2, refresh_threads=1, db_pool_size=3, db_pool_wait_seconds=0.2
    )
    settings.check()
    driver = GatedDriver()
    database = adapter.real_database(settings, monkeypatch, driver.connect)
    with ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(database.fetch_item, item) for item in (1, 2, 3)]  # 2 fills + 1 refresh
        try:
            for _ in busy:
                assert driver.slow.acquire(timeout=5), "the slow queries never held the pool"
            failures = []
            for name, call in (
                ("readiness ping", lambda: database.ping(timeout=0.2)),
                ("PUT's update", lambda: database.update_item(1, "x")),
            ):
                try:
                    call()
                except adapter.DatabaseUnavailable as exc:
                    failures.append(f"{name}: {exc}")
        finally:
            driver.gate.set()
    assert not failures, f"while fills hold the database pool: {failures}"
