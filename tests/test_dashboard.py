"""Issue 7: the live dashboard (/dashboard) and its JSON snapshot (/api/dashboard).

The counter test checks the snapshot's numbers against requests this test
made. The browser test drives Debian's chromium with Playwright against the
Compose stack, presses "burst", waits for the hit ratio and a key's state to
change on the page, and saves screenshots to test-artifacts/. With
UPDATE_README_SCREENSHOT=1 the screenshot taken under load is also copied to
docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import require_tool

from loadtest.stack import ROOT, parse_json, wait_until

ARTIFACTS = ROOT / "test-artifacts"
README_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOOKUP_RESULTS = (
    "hit",
    "stale",
    "miss",
    "collapsed",
    "bypass",
    "local",
    "overloaded",
    "unavailable",
)


def snapshot(lab) -> dict:
    response = lab.get("/api/dashboard")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return parse_json(response)


def bucket(histogram: dict, le: float | None) -> float:
    """Cumulative count of the bucket ``le`` (None: +Inf); 0 before any observation."""
    for bound, count in histogram["buckets"]:
        if bound == le:
            return count
    assert not histogram["buckets"], f"no bucket le={le} in {histogram['buckets']}"
    return 0.0


def test_snapshot_counts_match_the_requests_made(lab):
    before = snapshot(lab)
    item = 4242  # the lab fixture flushed Redis: a cold key
    assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
    for _ in range(5):
        assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT"
    # The app runs two gunicorn workers: whichever answers, the merged registry
    # holds both workers' counts, so every read agrees exactly.
    for _ in range(4):
        after = snapshot(lab)
        delta = {
            r: after["cache_requests"][r] - before["cache_requests"][r] for r in LOOKUP_RESULTS
        }
        assert delta == {
            "hit": 5,
            "stale": 0,
            "miss": 1,
            "collapsed": 0,
            "bypass": 0,
            "local": 0,
            "overloaded": 0,
            "unavailable": 0,
        }
        assert after["lookups"]["count"] - before["lookups"]["count"] == 6
        by_result = {
            r: after["lookups"]["by_result"].get(r, 0) - before["lookups"]["by_result"].get(r, 0)
            for r in ("hit", "miss")
        }
        assert by_result == {"hit": 5, "miss": 1}
        slow_before, slow_after = before["slow_query"]["ok"], after["slow_query"]["ok"]
        assert slow_after["count"] - slow_before["count"] == 1
        assert 1.0 <= slow_after["sum"] - slow_before["sum"] < 5  # SLOW_QUERY_SECONDS=1
        assert bucket(slow_after, 0.5) == bucket(slow_before, 0.5)  # not faster than the sleep
        assert bucket(slow_after, None) - bucket(slow_before, None) == 1
        assert after["server_time"] >= before["server_time"]
    assert after["strategy"] == "two-tier" and after["ttl_seconds"] == 30
    assert after["health"]["redis"]["memory_tier"]["mode"] == "tracking"
    info = after["redis_info"]
    assert info["status"] == "ok" and info["maxmemory"] == 128 * 1024 * 1024
    assert info["keyspace_hits"] >= 1 and info["connected_clients"] >= 2
    assert after["breaker"]["state"] == "closed"
    assert after["health"]["redis"]["status"] == "up"
    assert after["health"]["postgres"]["status"] == "up"
    keys = after["keys"]
    assert keys["status"] == "ok" and keys["total"] == 1
    (entry,) = keys["items"]
    assert entry["item"] == item and entry["state"] == "fresh"
    assert 0 < entry["ttl_s"] <= 30 and entry["expires_s"] > entry["ttl_s"]
    assert entry["query_s"] >= 1.0


def test_snapshot_reads_change_nothing_and_reveal_no_secrets(lab):
    first = snapshot(lab)
    for _ in range(3):
        body = lab.get("/api/dashboard").text
    last = snapshot(lab)
    # Polling is not traffic: no cache lookups, no Redis errors, breaker untouched.
    assert last["cache_requests"] == first["cache_requests"]
    assert last["lookups"]["count"] == first["lookups"]["count"]
    assert last["redis_errors"] == first["redis_errors"]
    assert lab.redis_cli("DBSIZE") == "0"
    for secret in (
        lab.env["POSTGRES_PASSWORD"],
        lab.env["APP_DB_PASSWORD"],
        lab.env["WRITE_API_TOKEN"],
        "postgresql://",
        "redis://",
    ):
        assert secret not in body
    assert (
        lab.get("/api/dashboard", headers={"Accept": "text/html"})
        .headers["Content-Type"]
        .startswith("application/json")
    )


def test_snapshot_says_when_redis_is_down(lab):
    redis = lab.container("redis")
    redis.stop(timeout=5)
    try:
        body = snapshot(lab)
        assert body["health"]["redis"]["status"] == "down"
        assert body["health"]["postgres"]["status"] == "up"
        assert body["keys"] == {"status": "unavailable", "total": None, "items": []}
    finally:
        redis.start()
    wait_until(
        lambda: snapshot(lab)["health"]["redis"]["status"] == "up",
        30,
        message="redis to be reported up",
    )


def test_dashboard_page_is_linked_and_has_no_inline_code(lab):
    assert 'href="/dashboard"' in lab.get("/").text
    page = lab.get("/dashboard")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "Content-Security-Policy" in page.headers
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r'(src|href)="(https?:)?//', html), "no CDN or external links"
    for asset in (
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/vendor/uplot/uPlot.min.css",
        "/static/dashboard.js",
        "/static/dashboard.css",
    ):
        assert asset in html
        assert lab.get(asset).status_code == 200, asset


# -- the browser ---------------------------------------------------------------
def _chromium() -> str | None:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    return path or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture
def browser(lab):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_tool(False, "playwright for Python (pip install playwright)")
    executable = _chromium()
    require_tool(executable is not None, "chromium (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _open_dashboard(browser, lab):
    context = browser.new_context(viewport={"width": 1366, "height": 900})  # a laptop
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # CSP violations and failed loads show up as console errors. Chromium drops
    # connections when the host's interfaces change (other Compose projects
    # starting or stopping): that is the machine, not the page.
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "ERR_NETWORK_CHANGED" not in msg.text
            else None
        ),
    )
    page.goto(lab.url("/dashboard"), wait_until="load")
    return page, problems


def _wait_text(page, selector: str, pattern: str, timeout_s: float = 30) -> str:
    """Wait (with a deadline) until the element's text matches ``pattern``."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel);"
        " return !!e && new RegExp(pat).test(e.textContent); }",
        arg=[selector, pattern],
        timeout=timeout_s * 1000,
        polling=200,
    )
    return page.text_content(selector)


class Load:
    """A bounded background load on the normal routes (127.0.0.1 only)."""

    def __init__(self, lab, seconds: float, threads: int = 4) -> None:
        self.lab, self.deadline, self.threads = lab, time.monotonic() + seconds, threads
        self.sent = 0
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        session = requests.Session()
        while time.monotonic() < self.deadline:
            roll = rng.random()
            if roll < 0.03:
                path = f"/api/version?item={rng.randint(1000, 9999)}"  # a cold key
            elif roll < 0.05:
                path = "/api/version?cache=bypass"  # the uncached baseline
            else:
                path = f"/api/version?item={rng.randint(0, 7)}"
            try:
                session.get(self.lab.url(path), timeout=30)
            except requests.RequestException:
                pass
            with self._lock:
                self.sent += 1
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.deadline = 0
        for worker in self._workers:
            worker.join(timeout=40)


def test_browser_burst_changes_hit_ratio_and_key_state(lab, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page, problems = _open_dashboard(browser, lab)
    _wait_text(page, "#updated", r"^Updated ")
    # Before any request: "no data yet", not zeros.
    assert page.text_content("#hit-ratio") == "no data yet"
    assert page.text_content("#rps") == "no data yet"
    assert page.text_content("#latency") == "no data yet"
    assert "no data yet" in page.text_content("#results-body")
    assert page.locator(".chart.has-data").count() == 0
    assert "No keys cached yet" in page.text_content("#keys-summary")
    assert "✓ up" in page.text_content("#redis-health")
    assert "✓ up" in page.text_content("#pg-health")
    assert "closed" in page.text_content("#breaker")
    assert page.text_content("#strategy") == "two-tier"

    page.fill("#burst-size", "20")
    for _attempt in range(3):  # each burst uses a new cold item
        page.click("#send-burst")
        result = _wait_text(page, "#try-result", r"20 requests for item \d+ .* in [0-9.]+ s:")
        if "failed" not in result:
            break
    # One request ran the slow query; the rest waited for it or hit the filled key.
    assert "1 MISS ran the slow query" in result, result
    assert "failed" not in result, result
    ratio = _wait_text(page, "#hit-ratio", r"^\d+ %$")
    assert ratio != "no data yet"
    row = page.wait_for_selector("#keys-body tr[data-state='fresh']", timeout=15_000)
    assert "✓ fresh" in row.text_content() and " s left" in row.text_content()
    page.wait_for_selector("#chart-hits.has-data", timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click("#send-one")
    _wait_text(page, "#try-result", r"^One request for item 0: ")

    # Under load the charts move and the tiles show rates and latencies.
    seconds = float(os.environ.get("DASHBOARD_LOAD_SECONDS", "15"))
    with Load(lab, seconds) as load:
        _wait_text(page, "#rps", r"^[0-9.]+$")
        page.wait_for_selector("#chart-latency.has-data", timeout=20_000)
        page.wait_for_selector("#chart-rps.has-data", timeout=20_000)
        _wait_text(page, "#latency", r"ms")
        time.sleep(max(0.0, load.deadline - time.monotonic() - 1))  # bounded: the load's own end
        shot = ARTIFACTS / "dashboard-load.png"
        page.screenshot(path=str(shot), full_page=True)
    assert load.sent > 50
    assert float(page.text_content("#rps")) > 0
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)
    assert not problems, problems


def test_browser_says_when_redis_is_down(lab, browser):
    page, problems = _open_dashboard(browser, lab)
    _wait_text(page, "#updated", r"^Updated ")
    # A breaker tripped by an earlier test may still be cooling down (1 s).
    page.wait_for_function("() => !document.querySelector('#banners .banner')", timeout=30_000)
    redis = lab.container("redis")
    redis.stop(timeout=5)
    try:
        banner = _wait_text(page, "#banners", r"cannot reach Redis", timeout_s=20)
        assert "fall back to PostgreSQL" in banner
        assert "✗ down" in page.text_content("#redis-health")
        _wait_text(page, "#keys-summary", r"Redis is unavailable")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-redis-down.png"), full_page=True)
    finally:
        redis.start()
    _wait_text(page, "#redis-health", r"✓ up", timeout_s=30)
    page.wait_for_function("() => !document.querySelector('#banners .banner')", timeout=30_000)
    assert not problems, problems


def test_browser_adds_up_every_app_container(lab, browser):
    """With two app containers Nginx alternates the polls between them; the
    page keeps differences per container and adds them up, exactly."""
    lab.reconfigure(scale={"app": 2})
    page, problems = _open_dashboard(browser, lab)
    _wait_text(page, "#updated", r"2 app containers seen", timeout_s=30)
    item = 4343
    assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "MISS"
    for _ in range(9):
        assert lab.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT"
    counts = """() => {
        const cell = (label) => {
            for (const tr of document.querySelectorAll('#results-body tr')) {
                if (tr.querySelector('th').textContent.startsWith(label))
                    return tr.querySelector('td').textContent;
            }
        };
        return cell('HIT') === '9' && cell('MISS (ran') === '1'
            && cell('MISS collapsed') === '0'; }"""
    page.wait_for_function(counts, timeout=30_000, polling=250)
    _wait_text(page, "#hit-ratio", r"^90 %$", timeout_s=10)
    assert not problems, problems
