"""Issue 2: the lab stack through Nginx, with real Redis and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import quote

import pytest

from cachelab.config import Settings
from cachelab.postgres import database
from loadtest.stack import ROOT, parse_json, wait_until

DELAY = 1.0  # SLOW_QUERY_SECONDS in tests/stack.py


def timed_get(lab, path):
    started = time.perf_counter()
    response = lab.get(path)
    return response, time.perf_counter() - started


def test_first_request_misses_then_hits_with_same_body(lab):
    first, first_seconds = timed_get(lab, "/api/version")
    assert first.status_code == 200
    assert first.headers["X-Cache"] == "MISS"
    assert "fwd=miss" in first.headers["Cache-Status"]
    assert "db;dur=" in first.headers["Server-Timing"]
    assert first_seconds >= DELAY
    second, second_seconds = timed_get(lab, "/api/version")
    assert second.headers["X-Cache"] == "HIT"
    assert second.headers["Cache-Status"].startswith("lab; hit; ttl=")
    assert "db;dur=" not in second.headers["Server-Timing"]
    assert second_seconds < DELAY / 4
    body1, body2 = parse_json(first), parse_json(second)
    assert body1["version"] == body2["version"]
    assert body1["version"].startswith("PostgreSQL ")
    assert body2["source"] in ("redis", "memory") and body2["ttl_remaining_s"] > 0


def test_html_page_shows_result_source_timings_and_ttl(lab):
    page = lab.get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "PostgreSQL" in page.text and "MISS" in page.text and "Database time" in page.text
    again = lab.get("/")
    assert again.headers["X-Cache"] == "HIT"
    assert "TTL left" in again.text and "not queried" in again.text


def test_one_miss_is_exactly_one_slow_query(lab):
    before = lab.settled_slow_calls(at_least=0)
    assert lab.get("/api/version?item=41").headers["X-Cache"] == "MISS"
    for _ in range(5):
        assert lab.get("/api/version?item=41").headers["X-Cache"] == "HIT"
    assert lab.settled_slow_calls(at_least=before + 1) == before + 1


def test_uncached_baseline_always_queries_the_database(lab):
    before = lab.settled_slow_calls(at_least=0)
    for _ in range(2):
        response, seconds = timed_get(lab, "/api/version?cache=bypass")
        assert response.status_code == 200
        assert response.headers["X-Cache"] == "BYPASS"
        assert response.headers["Cache-Status"] == "lab; fwd=request"
        assert seconds >= DELAY
    assert lab.settled_slow_calls(at_least=before + 2) == before + 2


@pytest.mark.lab_settings(CACHE_STRATEGY="cache-aside", CACHE_TTL_SECONDS="2")
def test_ttl_expiry_gives_a_miss_again_with_cache_aside(lab):
    first = lab.get("/api/version")
    assert first.headers["X-Cache"] == "MISS"
    assert lab.get("/api/version").headers["X-Cache"] == "HIT"
    # The key expires in Redis after the TTL: wait for that, not for a fixed time.
    key = parse_json(first)["key"]
    wait_until(lambda: lab.redis_cli("EXISTS", key) == "0", timeout=10, message="the key to expire")
    expired = lab.get("/api/version")
    assert expired.headers["X-Cache"] == "MISS"
    assert parse_json(expired)["strategy"] == "cache-aside"


def test_redis_stopped_pages_still_render_and_cache_resumes(lab):
    redis = lab.container("redis")
    redis.stop(timeout=5)
    try:
        for _ in range(3):
            response, seconds = timed_get(lab, "/api/version")
            assert response.status_code == 200
            assert response.headers["X-Cache"] == "BYPASS"
            assert "redis-unavailable" in response.headers["Cache-Status"]
            assert seconds < DELAY + 5
        assert parse_json(lab.get("/readyz"))["status"] == "degraded"
    finally:
        redis.start()
    wait_until(
        lambda: lab.get("/readyz").json()["redis"]["status"] == "up",
        30,
        message="redis to be reported up",
    )

    def cached_again():
        return lab.get("/api/version").headers["X-Cache"] == "HIT"

    wait_until(cached_again, timeout=30, interval=0.5, message="the cache to be used again")


def test_postgres_stopped_with_empty_cache_gives_503(lab):
    postgres = lab.container("postgres")
    postgres.stop(timeout=10)
    try:
        response, seconds = timed_get(lab, "/api/version?item=7")
        assert response.status_code == 503
        body = parse_json(response)
        assert body["error"] == "database_unavailable"
        assert "Traceback" not in response.text
        assert response.headers["Retry-After"]
        assert seconds < 10
        page = lab.get("/?item=7", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "<h1>503" in page.text
        ready = lab.get("/readyz")
        assert ready.status_code == 503 and ready.json()["postgres"]["status"] == "down"
    finally:
        postgres.start()
    lab.wait_ready(timeout=60)
    assert lab.get("/api/version?item=7").status_code == 200


def test_a_pooled_connection_whose_session_the_server_ended_is_not_handed_out(lab, monkeypatch):
    """A connection back in the pool for less than a second is reused without a
    ping. If the server ended its session meanwhile (a restart, a failover,
    ``pg_terminate_backend``), the next query gets a live connection, not the
    dead one's error: CI saw a 503 for the first read after PostgreSQL came back,
    from a worker whose connection had been in the pool under a second."""
    monkeypatch.setattr(database, "_REPING_AFTER_IDLE_SECONDS", 3600.0)  # every reuse is recent
    owner = quote(lab.secret("owner"), safe="")
    url = f"postgresql://lab:{owner}@127.0.0.1:{lab.port('postgres', 5432)}/lab"
    db = database.Database(Settings(database_url=url, redis_url="redis://unused"))
    try:
        highest = db.max_item_id()
        [(conn, _)] = db._idle
        pid = conn.info.backend_pid
        lab.psql(f"SELECT pg_terminate_backend({pid})")
        wait_until(
            lambda: lab.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0",
            10,
            message="the server to end the session",
        )
        assert db.max_item_id() == highest
    finally:
        db.close()


def test_db_init_is_idempotent_and_sets_the_function(stack):
    result = stack.compose("run", "--rm", "--no-deps", "db-init", check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    # The stack's own db-init applied every file; this run finds them unchanged.
    assert "applied nothing (no file changed)" in result.stdout, result.stdout
    assert "app role cachelab_app in cachelab_runtime" in result.stdout
    conn = stack.pg_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT file FROM cachelab_schema ORDER BY file")
            files = [row[0] for row in cur.fetchall()]
            assert files == sorted(p.name for p in (ROOT / "postgres-init").glob("*.sql"))
            cur.execute("SELECT prosrc FROM pg_proc WHERE proname = 'slow_version'")
            (source,) = cur.fetchone()
            cur.execute("SELECT value FROM lab_settings WHERE name = 'slow_query_seconds'")
            assert cur.fetchone()[0] == "1.0"  # SLOW_QUERY_SECONDS of the test stack
            cur.execute("SHOW track_functions")
            assert cur.fetchone()[0] == "pl"
    finally:
        conn.close()
    assert "pg_sleep" in source and "lab_settings" in source and "RETURN version()" in source


def test_the_app_container_runs_the_code_of_this_checkout(lab):
    """Every file of the package in the image is the checkout's own: an image
    rebuilt after a change must not keep the previous build's code (uv reuses
    a built wheel unless its cache-keys cover the sources)."""
    package = ROOT / "app" / "cachelab"
    here = {
        str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    script = (
        "import hashlib, json, pathlib, cachelab\n"
        "root = pathlib.Path(cachelab.__file__).parent\n"
        "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()"
        " for p in root.rglob('*') if p.is_file() and '__pycache__' not in p.parts}))"
    )
    code, out = lab.container("app").exec_run(["python", "-c", script])
    assert code == 0, out
    installed = json.loads(out.decode())
    changed = sorted(name for name in here if installed.get(name) != here[name])
    assert not changed, f"the image runs other code than the checkout for: {changed}"


def test_passwords_are_generated_on_the_first_start_and_kept(stack):
    """No password in the environment (as a newcomer's bare `docker compose up`):
    the one-shot `passwords` service wrote them; running it again keeps them."""
    assert not any("PASSWORD" in name for name in stack.env)
    owner, app = stack.secret("owner"), stack.secret("app")
    assert len(owner) == len(app) == 32 and owner != app
    again = stack.compose("run", "--rm", "--no-deps", "passwords", check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" kept (") == 3, again.stdout
    assert (stack.secret("owner"), stack.secret("app")) == (owner, app)
    assert stack.get("/api/version?item=5").status_code == 200
