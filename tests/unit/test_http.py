"""The HTTP layer with Flask's test client: headers, validators, errors, the items API."""

from __future__ import annotations

import logging
import time

import pytest

from cachelab import metrics
from cachelab.config import Settings
from cachelab.engine.keys import item_target
from cachelab.web import responses
from loadtest.stack import wait_until

TOKEN = "unit-test-token-0123456789"


@pytest.fixture
def client(make_app):
    return make_app(write_api_token=TOKEN).test_client()


def test_miss_then_memory_hit_with_every_promised_header(client, db):
    first = client.get("/api/version?item=3")
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    assert first.headers["Cache-Status"].startswith("lab; fwd=miss; stored; ttl=")
    assert (
        "db;dur=" in first.headers["Server-Timing"] and "app;dur=" in first.headers["Server-Timing"]
    )
    client.get("/api/version?item=3")
    hit = client.get("/api/version?item=3")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Cache-Status"].endswith("lab-memory; hit")
    assert hit.headers["Cache-Control"] == "no-cache" and hit.headers["ETag"].startswith('W/"')
    body = hit.get_json()
    assert body["cache"] == "HIT" and body["source"] == "memory" and body["item"] == 3
    assert body["version"] == first.get_json()["version"] and body["strategy"] == "two-tier"
    assert hit.headers["X-Request-ID"]
    assert db.calls["version"] == 1


def test_if_none_match_gets_a_304_with_the_cache_headers(client):
    client.get("/api/version")
    tag = client.get("/api/version").headers["ETag"]
    again = client.get("/api/version", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["X-Cache"] == "HIT" and again.headers["ETag"] == tag
    assert client.get("/api/version", headers={"If-None-Match": 'W/"other"'}).status_code == 200


def test_the_page_is_prepared_once_per_generation_and_shows_this_request(client):
    first = client.get("/?item=4")
    assert first.status_code == 200 and first.mimetype == "text/html"
    assert b'id="cache-result">MISS' in first.data and b"PostgreSQL 99.0 (fake)" in first.data
    client.get("/?item=4")
    page = client.get("/?item=4")
    assert b'id="cache-result">HIT' in page.data and b'id="source">memory' in page.data
    assert b"not queried" in page.data and b"TTL left" in page.data


def test_the_uncached_baseline_always_queries(client, db):
    for _ in range(2):
        response = client.get("/api/version?cache=bypass")
        assert response.headers["X-Cache"] == "BYPASS"
        assert response.headers["Cache-Status"] == "lab; fwd=request"
    assert db.calls["version"] == 2


def test_strategy_none_queries_every_request_and_says_why(make_app, db):
    """The lab's baseline strategy: nothing read from or written to the cache."""
    client = make_app(cache_strategy="none").test_client()
    for _ in range(2):
        response = client.get("/api/version?item=5")
        assert response.status_code == 200 and response.headers["X-Cache"] == "BYPASS"
        assert "strategy-none" in response.headers["Cache-Status"], response.headers
        assert response.get_json()["source"] == "database"
    assert db.calls["version"] == 2


def test_every_answer_says_where_its_time_went(make_app):
    """Server-Timing and the body's timings name the tiers a request waited on."""
    client = make_app(cache_strategy="swr").test_client()
    miss = client.get("/api/version?item=6").get_json()
    assert {"cache", "db"} <= set(miss["timings_ms"]), miss["timings_ms"]
    answer = client.get("/api/version?item=6")
    assert "; ttl=" in answer.headers["Cache-Status"], answer.headers["Cache-Status"]
    hit = answer.get_json()
    assert hit["source"] == "redis" and set(hit["timings_ms"]) == {"cache"}, hit
    breaker = client.application.extensions["cachelab"].store.breaker
    breaker._state, breaker._opened_at = "open", 1e18  # Redis unavailable: the last copy
    degraded = client.get("/api/version?item=6").get_json()
    assert degraded["source"] == "local" and set(degraded["timings_ms"]) == {"cache"}, degraded
    memory = make_app().test_client()
    for _ in range(3):
        last = memory.get("/api/version?item=7").get_json()
    assert last["source"] == "memory" and set(last["timings_ms"]) == {"memory"}, last


def test_an_outage_serves_a_read_your_writes_copy_nobody_invalidated(make_app, db):
    """Rule 5 for ``delete`` data: a copy with no invalidation heard is still
    served while Redis is unavailable (only one heard invalidated is not)."""
    client = make_app(cache_strategy="swr").test_client()
    lab = client.application.extensions["cachelab"]
    key = item_target(lab.settings.cache_namespace, 3, "delete").key

    def copy_kept() -> bool:  # the fill's own write is heard first: read again
        assert client.get("/api/items/3?mode=delete").status_code == 200
        lab.tier1.sync()
        copy = lab.tier1.last_copy(key)
        return copy is not None and copy.valid

    wait_until(copy_kept, 5, interval=0.01, message="a copy with no invalidation since")
    queried = db.calls["item"]
    breaker = lab.store.breaker
    breaker._state, breaker._opened_at = "open", 1e18
    answer = client.get("/api/items/3?mode=delete")
    assert answer.status_code == 200 and answer.get_json()["source"] == "local", answer.get_json()
    assert db.calls["item"] == queried


@pytest.mark.parametrize(
    "query, reason",
    [
        ("item=x", "item must be an integer"),
        ("item=10000", "item must be an integer"),
        ("itme=1", "unknown query parameter"),
        ("item=1&item=2", "more than once"),
        ("cache=yes", "cache must be"),
    ],
)
def test_bad_parameters_get_a_400_with_the_reason(client, query, reason):
    response = client.get(f"/api/version?{query}")
    assert response.status_code == 400 and reason in response.get_json()["message"]


def test_a_database_outage_without_a_cached_value_is_a_503_with_retry_after(client, db):
    db.fail = True
    response = client.get("/api/version?item=77")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"] == "database_unavailable"
    page = client.get("/?item=77", headers={"Accept": "text/html"})
    assert page.status_code == 503 and b"<h1>503" in page.data and b"Traceback" not in page.data


def test_an_overloaded_worker_answers_503_overloaded_at_once(make_app, db):
    import threading

    client = make_app(fill_slots=1, miss_slots=1).test_client()
    db.gate = threading.Event()
    thread = threading.Thread(target=client.get, args=("/api/version?item=1",))
    thread.start()
    assert db.started.acquire(timeout=5)
    response = client.get("/api/version?item=2")
    db.gate.set()
    thread.join(5)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "overloaded"
    assert response.headers["Cache-Status"] == "lab; fwd=miss; detail=overloaded"


def test_readyz_reports_the_memory_tier(client, db):
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready"
    assert ready["redis"]["memory_tier"]["mode"] == "tracking"
    db.fail = True
    assert client.get("/readyz").status_code == 503


def test_metrics_count_lookups_once_by_result_and_tier(client):
    child = metrics.CACHE_REQUESTS[("two-tier", "hit", "memory")]
    before = child._value.get()
    for _ in range(3):
        client.get("/api/version?item=8")
    assert child._value.get() == before + 1
    assert b"cachelab_cache_requests_total" in client.get("/metrics").data


# -- the items API ---------------------------------------------------------------------
def put(client, item_id, payload="new", token=TOKEN, **query):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = f"/api/items/{item_id}" + (
        "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    )
    return client.put(path, json={"payload": payload}, headers=headers)


def test_the_write_api_is_off_without_a_token(make_app):
    client = make_app(write_api_token=None).test_client()
    response = put(client, 1)
    assert response.status_code == 403 and "WRITE_API_TOKEN" in response.get_json()["message"]


def test_a_put_needs_the_bearer_token(client):
    missing = put(client, 1, token=None)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].lower() == "bearer"
    assert put(client, 1, token="wrong-token-wrong-token").status_code == 403
    assert put(client, 1).status_code == 200


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "JSON"),
        (b"[]", "JSON object"),
        (b'{"payload": 3}', "string"),
        (b'{"payload": "x", "more": 1}', "JSON object"),
        (b'{"payload": "\\u0000"}', "NUL"),
    ],
)
def test_bad_bodies_get_a_400_with_the_reason(client, body, reason):
    response = client.put(
        "/api/items/1",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400 and reason in response.get_json()["message"]


def test_unknown_items_and_modes_are_refused(client):
    assert client.get("/api/items/0").status_code == 400
    assert client.get("/api/items/abc").status_code == 400
    assert client.get("/api/items/500").status_code == 404
    assert "mode must be" in client.get("/api/items/1?mode=lazy").get_json()["message"]
    assert put(client, 500).status_code == 404


@pytest.mark.parametrize(
    "mode, action",
    [("delete", "tombstone"), ("write-through", "written"), ("ttl", "none"), ("notify", "notify")],
)
def test_each_mode_does_its_cache_action_after_the_commit(make_app, mode, action):
    # Cached before the write (a Redis call that timed out on a loaded machine
    # stores nothing), with a TTL no loaded machine outlasts: ttl mode's old
    # version must still be cached at the read after the write.
    client = make_app(write_api_token=TOKEN, cache_ttl_seconds=60).test_client()
    wait_until(
        lambda: client.get(f"/api/items/2?mode={mode}").headers["X-Cache"] == "HIT",
        5,
        interval=0.01,
        message="item 2 cached",
    )
    response = put(client, 2, payload=f"by-{mode}", mode=mode)
    body = response.get_json()
    assert response.status_code == 200 and body["cache_action"] == action
    assert body["item"]["payload"] == f"by-{mode}"
    read = client.get(f"/api/items/2?mode={mode}").get_json()["item"]
    if mode in ("delete", "write-through"):  # read-your-writes
        assert read["version"] >= body["item"]["version"]
    if mode == "ttl":  # the cached version stays until the TTL
        assert read["version"] < body["item"]["version"]


def test_the_unguarded_delete_shows_the_stale_refill(make_app, db):
    """The race the tombstone fixes: a fill that read the row before the write
    stores it after the delete."""
    import threading

    client = make_app(write_api_token=TOKEN).test_client()
    for guard, expect_stale in (("off", True), ("on", False)):
        db.gate = threading.Event()
        reader = threading.Thread(
            target=client.get, args=(f"/api/items/3?mode=delete&guard={guard}",)
        )
        reader.start()
        assert db.started.acquire(timeout=5)  # the fill has read the old row
        written = put(client, 3, payload=f"guard-{guard}", mode="delete", guard=guard).get_json()
        db.gate.set()
        reader.join(5)
        db.gate = None
        cached = client.get(f"/api/items/3?mode=delete&guard={guard}").get_json()
        stale = cached["item"]["version"] < written["item"]["version"]
        assert stale is expect_stale, (guard, cached["item"], written["item"])


def test_settings_from_env_name_the_bad_variable():
    env = {"DATABASE_URL": "postgresql://u:p@h/d", "REDIS_URL": "redis://r:6379/0"}
    assert Settings.from_env(env).cache_strategy == "two-tier"
    from cachelab.config import ConfigError

    for bad, name in [
        ({"CACHE_TTL_SECONDS": "ten"}, "CACHE_TTL_SECONDS"),
        ({"CACHE_STRATEGY": "lru"}, "CACHE_STRATEGY"),
        ({"EDGE_CACHE_SECONDS": "0"}, "EDGE_CACHE_SECONDS"),
        ({"EDGE_CACHE_SECONDS": "61"}, "EDGE_CACHE_SECONDS"),
        ({"WRITE_API_TOKEN": "short"}, "WRITE_API_TOKEN"),
        ({"SLOW_QUERY_SECONDS": "20"}, "CACHE_LOCK_WAIT_SECONDS"),
        ({"REDIS_MAX_CONNECTIONS": "10"}, "REDIS_MAX_CONNECTIONS"),
        ({"CACHE_FILL_SLOTS": "30"}, "DB_POOL_SIZE"),
        ({"CACHE_MISS_SLOTS": "64"}, "CACHE_MISS_SLOTS"),
        ({"DB_STATEMENT_TIMEOUT_MS": "1000", "SLOW_QUERY_SECONDS": "2"}, "DB_STATEMENT_TIMEOUT_MS"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**env, **bad})


def test_a_unicode_digit_in_an_item_id_is_a_400_not_a_500(client):
    """Defect: '²'.isdigit() is true and int('²') fails: /api/items/%C2%B2 gave 500."""
    for raw in ("%C2%B2", "%D9%A3", "1%C2%B2"):
        response = client.get(f"/api/items/{raw}")
        assert response.status_code == 400, raw
        assert "item id must be an integer" in response.get_json()["message"]


def test_an_absent_item_is_a_cached_404_and_an_id_above_the_table_never_reaches_the_cache(
    client, db, raw
):
    """Defect: a missing row was never cached, so every repeat ran the slow query.
    An id above the table is answered before the cache: a flood of them takes no
    lease or miss slot and fills Redis with no "not found" entries."""
    above = max(db.items) + 500
    first, again = client.get(f"/api/items/{above}"), client.get(f"/api/items/{above}")
    assert [r.status_code for r in (first, again)] == [404, 404]
    assert first.get_json()["error"] == "not_found"
    assert "X-Cache" not in first.headers and "X-Cache" not in again.headers
    assert not raw.keys(f"*:{above}}}*")  # no entry, no lease, no fence
    assert db.calls["item"] == 0  # no slow query at all
    del db.items[3]  # a missing row inside the range: queried once, then cached
    answers = [client.get("/api/items/3") for _ in range(3)]
    assert [a.status_code for a in answers] == [404] * 3
    assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    assert db.calls["item"] == 1


def test_a_503_database_unavailable_counts_in_the_hit_ratio(client, db):
    """Defect: 503 database_unavailable was left out of the hit ratio's denominator."""
    child = metrics.CACHE_REQUESTS[("two-tier", "unavailable", "none")]
    before = child._value.get()
    db.fail = True
    assert client.get("/api/version?item=78").status_code == 503
    assert client.get("/api/items/4").status_code == 503
    assert child._value.get() == before + 2
    assert metrics.hit_ratio({"hit": 1, "unavailable": 1}) == 0.5


def test_a_write_whose_cache_action_fails_still_answers_and_says_so(make_app, raw, caplog):
    client = make_app(write_api_token=TOKEN, redis_retry_timeout_ms=100).test_client()
    logging.getLogger().addHandler(caplog.handler)  # the app's logging replaced it
    client.get("/api/items/5?mode=delete")
    raw.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # Redis takes no write in time
    response = put(client, 5, payload="while-redis-is-down", mode="delete")
    body = response.get_json()
    assert response.status_code == 200 and body["cache_action"] == "failed"
    assert set(body["timings_ms"]) == {"db", "cache"}
    failed = [r for r in caplog.records if r.getMessage() == "cache action after a write failed"]
    assert failed and failed[0].key.endswith("{item:delete:5}") and "Timeout" in failed[0].reason


def test_a_write_keeps_read_your_writes_while_the_breaker_is_open(make_app, db):
    """Found by the stack test under load: a write whose cache action timed out
    (75 ms on a saturated machine) answered "failed" and the old version stayed
    for a whole TTL. The action after the commit is patient and past the breaker."""
    client = make_app(write_api_token=TOKEN).test_client()
    client.get("/api/items/6?mode=write-through")
    app_lab = client.application.extensions["cachelab"]
    app_lab.store.breaker._state, app_lab.store.breaker._opened_at = "open", 1e18
    body = put(client, 6, payload="new", mode="write-through").get_json()
    assert body["cache_action"] == "written"
    target = item_target(app_lab.settings.cache_namespace, 6, "write-through")
    assert app_lab.store.read_patiently(target.key).entry.version == body["item"]["version"]


@pytest.mark.parametrize("now", [10.0, 10.4, 10.999])
@pytest.mark.parametrize("seconds", [1, 2, 30])
def test_nginx_keeps_an_edge_copy_fresh_for_at_most_edge_cache_seconds(now, seconds):
    """Nginx's rule (``ngx_http_file_cache_read``): fresh while the clock's whole
    second is not past ``valid_sec``. With the stamp, a copy made at ``now`` is
    fresh until ``floor(now) + seconds``: more than ``seconds - 1``, at most
    ``seconds`` (a relative ``proxy_cache_valid`` kept it up to ``seconds + 1``)."""
    valid_sec = int(responses.edge_expiry(now, seconds).removeprefix("@"))
    fresh_until = valid_sec + 1  # the first instant whose second is past valid_sec
    assert seconds - 1 < fresh_until - now <= seconds


def test_edge_answers_tell_nginx_when_its_copy_stops_being_fresh(make_app):
    edge = make_app(cache_strategy="edge", edge_cache_seconds=3).test_client()
    for path in ("/api/version?item=3", "/?item=3", "/api/items/3"):
        for _ in range(4):  # a miss, a Redis hit, memory hits (Flask, then the WSGI hit path)
            before = time.time()
            answer = edge.get(path)
            after = time.time()
            assert answer.status_code == 200, path
            stamps = {f"@{int(before) + 2}", f"@{int(after) + 2}"}
            assert answer.headers["X-Accel-Expires"] in stamps, (path, answer.headers)
    tag = edge.get("/api/version?item=3").headers["ETag"]
    assert (
        "X-Accel-Expires"
        not in edge.get("/api/version?item=3", headers={"If-None-Match": tag}).headers
    )  # a 304 is not a copy to keep
    assert "X-Accel-Expires" not in edge.get("/api/items/9999999").headers
    two_tier = make_app().test_client()
    assert "X-Accel-Expires" not in two_tier.get("/api/version?item=3").headers
