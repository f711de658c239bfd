"""The WSGI hit path (cachelab.web.hitpath) answers tier-1 hits exactly as Flask's views do."""

from __future__ import annotations

import json

import pytest

from cachelab import metrics
from cachelab.web.hitpath import MemoryHits
from loadtest.stack import wait_until

RID = {"X-Request-ID": "req-0123456789"}


@pytest.fixture
def app(make_app):
    return make_app(cache_ttl_seconds=600)


def both_paths(app, path, **kwargs):
    """The same request through the hit path and through Flask alone (a memory hit both times)."""
    hit_path = app.wsgi_app
    assert isinstance(hit_path, MemoryHits)
    client = app.test_client()
    fast = client.get(path, **kwargs)
    app.wsgi_app = hit_path.app  # Flask (behind ProxyFix) only
    try:
        flask = client.get(path, **kwargs)
    finally:
        app.wsgi_app = hit_path
    return fast, flask


def warm(app, path):
    client = app.test_client()
    for _ in range(3):  # the miss, then a Redis hit, then a memory hit that prepares the bytes
        client.get(path)


def test_json_hit_has_the_same_headers_and_body_on_both_paths(app):
    warm(app, "/api/version?item=5")
    fast, flask = both_paths(app, "/api/version?item=5", headers=RID)
    assert fast.status_code == flask.status_code == 200
    assert fast.headers["Cache-Status"].endswith("lab-memory; hit")
    for name in (
        "Content-Type",
        "Content-Length",
        "X-Cache",
        "Cache-Control",
        "ETag",
        "X-Request-ID",
    ):
        assert fast.headers[name] == flask.headers[name], name
    assert [k for k, _ in fast.headers] == [k for k, _ in flask.headers]
    # The TTL left and the timings are this request's own.
    assert (
        fast.headers["Cache-Status"].split("ttl=")[0]
        == flask.headers["Cache-Status"].split("ttl=")[0]
    )
    assert fast.headers["Server-Timing"].startswith("memory;dur=")
    assert ", app;dur=" in fast.headers["Server-Timing"]
    fast_body, flask_body = json.loads(fast.data), json.loads(flask.data)
    assert fast_body.pop("ttl_remaining_s") > 500 and flask_body.pop("ttl_remaining_s") > 500
    assert set(fast_body.pop("timings_ms")) == set(flask_body.pop("timings_ms")) == {"memory"}
    assert fast_body == flask_body and fast_body["item"] == 5 and fast_body["source"] == "memory"


def test_page_hit_is_the_same_page(app):
    warm(app, "/?item=6")
    fast, flask = both_paths(app, "/?item=6")
    assert fast.status_code == 200 and fast.mimetype == "text/html"
    assert fast.headers["Content-Type"] == flask.headers["Content-Type"]
    assert b'id="cache-result">HIT' in fast.data and b'id="source">memory' in fast.data
    strip = [
        line
        for line in fast.data.decode().splitlines()
        if 'id="ttl"' not in line and 'id="cache-ms"' not in line
    ]
    assert strip == [
        line
        for line in flask.data.decode().splitlines()
        if 'id="ttl"' not in line and 'id="cache-ms"' not in line
    ]


def test_if_none_match_and_head(app):
    warm(app, "/api/version")
    client = app.test_client()
    tag = client.get("/api/version").headers["ETag"]
    fast, flask = both_paths(app, "/api/version", headers={"If-None-Match": tag})
    assert fast.status_code == flask.status_code == 304
    assert fast.data == b"" and dict(fast.headers).keys() == dict(flask.headers).keys()
    head = client.head("/api/version")
    assert head.status_code == 200 and head.data == b""
    assert int(head.headers["Content-Length"]) == len(client.get("/api/version").data)


@pytest.mark.parametrize(
    "query", ["item=x", "item=10000", "itme=1", "item=1&item=2", "cache=yes", "item=%31", "item=1&"]
)
def test_anything_but_a_plain_item_goes_to_flask(app, query):
    warm(app, "/api/version?item=1")
    fast, flask = both_paths(app, f"/api/version?{query}", headers=RID)
    assert fast.status_code == flask.status_code
    if fast.status_code == 400:
        assert fast.data == flask.data and b"bad_request" in fast.data
    else:  # %31 is 1, and an empty parameter is nothing, to Flask
        assert fast.status_code == 200 and json.loads(fast.data)["item"] == 1


def test_a_hit_is_counted_and_timed_like_flasks(app):
    warm(app, "/api/version?item=7")
    lookups = metrics.CACHE_REQUESTS[("two-tier", "hit", "memory")]
    timed = metrics.request_seconds("/api/version", "hit", "2xx")
    before = (lookups._value.get(), timed._sum.get())
    client = app.test_client()
    for _ in range(5):
        assert client.get("/api/version?item=7").headers["Cache-Status"].endswith("memory; hit")
    assert lookups._value.get() == before[0] + 5
    assert timed._sum.get() > before[1]


def test_a_write_by_another_client_is_seen_at_once(app, raw):
    warm(app, "/api/version?item=8")
    client = app.test_client()
    first = client.get("/api/version?item=8")
    assert first.headers["Cache-Status"].endswith("memory; hit")
    key = json.loads(first.data)["key"]
    entry = json.loads(raw.get(key))
    entry["value"]["version"] = "written-outside"
    entry["fence"] += 1
    raw.set(key, json.dumps(entry), px=raw.pttl(key))
    # Each request first applies the invalidations already received (Tracking.sync).
    wait_until(
        lambda: json.loads(client.get("/api/version?item=8").data)["version"] == "written-outside",
        1,
        interval=0.001,
        message="the new value",
    )


def test_an_edge_hit_stamps_nginx_s_expiry_on_both_paths(make_app):
    """The edge strategy keeps tier 1, so Nginx's refreshes are often served
    here: they must carry the expiry too, or Nginx falls back to its own
    relative validity (a second longer)."""
    app = make_app(cache_strategy="edge", edge_cache_seconds=2, cache_ttl_seconds=600)
    warm(app, "/api/version?item=5")
    fast, flask = both_paths(app, "/api/version?item=5")
    assert fast.headers["Server-Timing"].startswith("memory;dur=")
    assert fast.headers["X-Accel-Expires"].startswith("@")
    assert [k for k, _ in fast.headers] == [k for k, _ in flask.headers]
