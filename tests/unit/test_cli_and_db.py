"""The command line (check-config, cache purge) and the database client's bounds."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from typing import Any, cast

import psycopg2
import pytest
from click.testing import CliRunner

from cachelab.cli import main
from cachelab.postgres import database
from cachelab.postgres.database import Database, DatabaseUnavailable
from cachelab.postgres.sources import LabSources


def env_for(settings, **extra) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CACHE_NAMESPACE": settings.cache_namespace,
        **extra,
    }


def test_check_config_prints_the_settings_without_secrets(settings):
    env = env_for(settings, WRITE_API_TOKEN="a-secret-token-0123456789")
    result = CliRunner().invoke(main, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert "cache_strategy=two-tier" in result.output and "write_api=on" in result.output
    assert "fake:fake" not in result.output and "a-secret-token" not in result.output


def test_check_config_names_the_bad_variable(settings):
    result = CliRunner().invoke(
        main, ["check-config"], env=env_for(settings, CACHE_TTL_SECONDS="ten")
    )
    assert result.exit_code != 0
    assert "invalid configuration: CACHE_TTL_SECONDS must be an integer" in result.output


def test_purge_deletes_entries_and_locks_of_this_namespace_only(settings, raw):
    namespace = settings.cache_namespace
    for n in range(3):
        raw.set(f"{namespace}:v3:{{version:{n}}}", "entry")
    raw.set(f"{namespace}:v3:{{version:0}}:lease", "a-lease")
    raw.set(f"{namespace}:v3:{{version:0}}:fence", "17")
    raw.set("other:v3:{version:0}", "not ours")
    result = CliRunner().invoke(main, ["cache", "purge"], env=env_for(settings))
    assert result.exit_code == 0, result.output
    assert f"deleted 5 keys matching {namespace}:v3:*" in result.output
    assert raw.exists("other:v3:{version:0}") and not raw.keys(f"{namespace}:v3:*")


def test_a_full_pool_answers_database_unavailable_after_the_pool_wait(settings):
    db = Database(replace(settings, db_pool_size=1, db_pool_wait_seconds=0.2))
    assert db._slots.acquire(timeout=1)  # the only connection is busy
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="no free database connection within 0.2s"):
        db.fetch_slow_version()
    assert 0.2 <= time.monotonic() - started < 1.0


def test_a_server_that_never_answers_fails_within_the_connect_timeout(settings):
    """A paused PostgreSQL accepts TCP but says nothing: the client-side deadline ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever answers
        port = silent.getsockname()[1]
        db = Database(
            replace(
                settings,
                db_connect_timeout_seconds=1,
                database_url=f"postgresql://u:p@127.0.0.1:{port}/x",
            )
        )
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            db.fetch_slow_version()
        assert time.monotonic() - started < 2.5


class _PooledConnection:
    """A connection in the pool; ``server`` is the other end of its socket."""

    closed = 0

    def __init__(self) -> None:
        self.socket, self.server = socket.socketpair()
        self.statements: list[str] = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def cursor(self) -> _PooledConnection:
        return self

    def __enter__(self) -> _PooledConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append(sql)
        if self.server.fileno() == -1:  # the server ended the session
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    def fetchone(self) -> tuple:
        return (7,)

    def close(self) -> None:
        self.closed = 1
        self.socket.close()


def test_a_connection_back_in_the_pool_moments_ago_is_reused_without_a_ping(settings):
    db = Database(settings)
    quiet = _PooledConnection()
    db._idle.append((cast(Any, quiet), time.monotonic()))
    assert db.max_item_id() == 7
    assert quiet.statements == [database.MAX_ITEM_ID]  # no round trip before it


def test_a_pooled_connection_whose_server_spoke_while_idle_is_pinged_first(settings):
    """A restart or a failover ends every session with a message and a close:
    the connection is pinged, found dead and dropped, not handed out (CI saw a
    503 from one back in the pool under a second when PostgreSQL restarted)."""
    db = Database(settings)
    ended = _PooledConnection()
    ended.server.sendall(b"E")  # the server's FATAL notice
    ended.server.close()
    db._idle.append((cast(Any, ended), time.monotonic()))
    with pytest.raises(DatabaseUnavailable):  # no server at the settings' URL for a new one
        db.max_item_id()
    assert ended.statements == ["SELECT 1"] and ended.closed


def test_db_init_reapplies_a_file_only_when_its_text_or_its_declared_settings_change():
    from cachelab.postgres.provision import file_digest
    from loadtest.stack import ROOT

    items = (ROOT / "postgres-init" / "02-items.sql").read_text()
    base = {"item_count": "1000", "item_payload_bytes": "256", "slow_query_seconds": "10.0"}
    digest = file_digest(items, base)
    assert file_digest(items, dict(base)) == digest
    # read by functions at run time, not when the file is applied: no re-run
    assert file_digest(items, {**base, "slow_query_seconds": "2.0"}) == digest
    assert file_digest(items, {**base, "item_count": "500"}) != digest
    assert file_digest(items, {**base, "item_payload_bytes": "64"}) != digest
    assert file_digest(items + "\n-- changed\n", base) != digest


def test_db_init_on_aws_builds_the_owner_url_from_the_master_secret(tmp_path):
    import json as _json
    from urllib.parse import unquote

    import pytest as _pytest

    from cachelab.postgres.provision import owner_url_from_env

    ca = tmp_path / "bundle.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    env = {
        "DB_OWNER_SECRET": _json.dumps({"username": "cachelab", "password": "p@ss/wörd"}),
        "DB_HOST": "cachelab-db.abc.eu-west-1.rds.amazonaws.com",
        "DB_PORT": "5432",
        "DB_NAME": "lab",
        "DB_CA_URL": ca.as_uri(),
    }
    url = owner_url_from_env(env)
    assert url is not None
    assert url.startswith(
        "postgresql://cachelab:p%40ss%2Fw%C3%B6rd@cachelab-db.abc.eu-west-1.rds.amazonaws.com:5432/lab?"
    )
    assert "sslmode=verify-full" in url
    rootcert = unquote(url.split("sslrootcert=", 1)[1])
    assert open(rootcert).read() == ca.read_text()
    assert owner_url_from_env({}) is None
    for broken, named in (
        ({**env, "DB_OWNER_SECRET": "not json"}, "DB_OWNER_SECRET"),
        ({**env, "DB_HOST": ""}, "DB_HOST"),
        ({**env, "DB_CA_URL": ""}, "DB_CA_URL"),
        ({**env, "DB_CA_URL": (tmp_path / "missing.pem").as_uri()}, "DB_CA_URL"),
    ):
        with _pytest.raises(ValueError, match=named):
            owner_url_from_env(broken)


def test_writes_and_probes_do_not_wait_behind_the_slow_queries(settings):
    """Suspected defect, confirmed: PUTs and the readiness pings shared the fill
    slots' pool, so a worker whose fills held every connection could not take a
    write or answer /readyz. They have connections of their own now."""
    db = Database(replace(settings, db_pool_size=1, db_pool_wait_seconds=0.2))
    assert db._slots.acquire(timeout=1)  # every slow-query connection is busy
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as refused:  # no server here: it must try
        db.ping(timeout=0.5)
    assert "no free database connection" not in str(refused.value)
    assert time.monotonic() - started < 2.0


class _RangeOnlyDatabase:
    """What LabSources asks of the database to bound the id range (``None``:
    the database is down)."""

    def __init__(self, highest: int | None) -> None:
        self.highest = highest
        self.asked = 0

    def max_item_id(self) -> int:
        self.asked += 1
        if self.highest is None:
            raise DatabaseUnavailable("down")
        return self.highest


def test_an_inserted_row_widens_the_range_at_once_without_asking_the_database():
    """An id above the known highest is refused without the slow query, but a
    row inserted meanwhile (its NOTIFY) is in range at once, not a second later."""
    now = [100.0]
    db = _RangeOnlyDatabase(1000)
    sources = LabSources(db, clock=lambda: now[0])  # type: ignore[arg-type]
    assert sources.may_exist(1000) and not sources.may_exist(1001)
    assert db.asked == 1  # the second answer came from the known range
    sources.saw_item(1001)
    sources.saw_item(900)  # a lower id never narrows it
    assert sources.may_exist(1001) and not sources.may_exist(1002)
    assert db.asked == 1


def test_a_database_that_cannot_say_is_asked_at_most_once_a_second():
    """Every item read asks ``may_exist`` first, before the cache: a worker that
    started while PostgreSQL was down must not try the database on each read
    (serialized behind one lock, each try up to its connect budget)."""
    now = [100.0]
    db = _RangeOnlyDatabase(None)
    sources = LabSources(db, clock=lambda: now[0])  # type: ignore[arg-type]
    assert all(sources.may_exist(item) for item in (1, 5, 5000))  # the query decides
    assert db.asked == 1
    now[0] += 1.5
    db.highest = 1000
    assert sources.may_exist(1) and not sources.may_exist(5000)
    assert db.asked == 2


class _GatedDatabase(_RangeOnlyDatabase):
    """A lookup that says it started and waits for ``release``."""

    def __init__(self, highest: int | None) -> None:
        super().__init__(highest)
        self.entered, self.release = threading.Event(), threading.Event()

    def max_item_id(self) -> int:
        self.entered.set()
        assert self.release.wait(5)
        return super().max_item_id()


class _SpiedLock:
    """A lock that says when someone has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.locked():
            self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_before_the_slow_query_a_range_never_learned_is_asked_again_at_once():
    """The once-a-second limit spares the cheap check in front of the cache, not the slow
    query: right after a failed lookup, a read that is about to query asks again, so an id
    above the table never reaches the database once it is back."""
    now = [100.0]
    db = _RangeOnlyDatabase(None)
    sources = LabSources(db, clock=lambda: now[0])  # type: ignore[arg-type]
    assert sources.may_exist(5000) and db.asked == 1  # down: cannot tell
    db.highest = 1000
    assert sources.may_exist(5000) and db.asked == 1  # the cheap check keeps its limit
    assert not sources.may_exist(5000, querying=True) and db.asked == 2
    assert not sources.may_exist(5001, querying=True) and db.asked == 2  # learned: no more asks


def test_a_query_waits_for_the_lookup_in_flight_and_takes_its_answer():
    """Reads about to query while the range is unknown queue behind the one lookup (bounded by
    its budget) instead of letting the query decide; its answer, even "cannot tell", serves
    them all without a second lookup each."""
    now = [100.0]
    for highest, expected in ((1000, False), (None, True)):
        db = _GatedDatabase(highest)
        entered, release = db.entered, db.release
        sources = LabSources(db, clock=lambda: now[0])  # type: ignore[arg-type]
        sources._lock = lock = _SpiedLock()  # type: ignore[assignment]
        first = threading.Thread(target=sources.may_exist, args=(1,), kwargs={"querying": True})
        first.start()
        assert entered.wait(5)
        answers: list[bool] = []
        waiter = threading.Thread(
            target=lambda: answers.append(sources.may_exist(5000, querying=True))  # noqa: B023
        )
        waiter.start()
        assert lock.contended.wait(5), "the second read did not wait for the lookup"
        release.set()
        first.join(5)
        waiter.join(5)
        assert answers == [expected] and db.asked == 1, (highest, answers, db.asked)


def test_one_check_at_a_time_and_the_others_do_not_wait_for_it():
    """While one request re-reads the highest id, the others answer from what is
    known instead of queueing behind it."""
    now = [100.0]
    db = _GatedDatabase(1000)
    entered, release = db.entered, db.release
    sources = LabSources(db, clock=lambda: now[0])  # type: ignore[arg-type]
    checker = threading.Thread(target=sources.may_exist, args=(1,))
    checker.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert sources.may_exist(7)  # nothing known yet: the query decides
    assert time.monotonic() - started < 0.5
    release.set()
    checker.join(5)
    assert db.asked == 1 and not sources.may_exist(1001)
