"""What makes an answer the lab's answer: the checks every Locust scenario applies.

A ``200`` is not enough: the body must be the lab's answer for the requested
item (a PostgreSQL version string, the item asked for, a known cache result
and tier, an ``X-Cache`` header that agrees with the body). Used by
loadtest/locustfile.py through ``catch_response``; copied beside it into the
Locust image.
"""

from __future__ import annotations

RESULTS = {"HIT", "STALE", "MISS", "BYPASS"}
SOURCES = {"memory", "redis", "database", "local"}


def http_problem(response) -> str:
    """'HTTP 503 database_unavailable': the lab's error code, stable for grouping."""
    if response.status_code == 0:  # no HTTP answer: connection error or timeout
        return f"no response: {getattr(response, 'error', None)}"
    code = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = " " + body["error"][:60]
    except Exception:  # noqa: BLE001 - an HTML or empty error body
        pass
    return f"HTTP {response.status_code}{code}"


def check_lookup(response, item: int, bypass: bool = False) -> str | None:
    """Why a response is not the lab's answer for ``item`` (None if it is)."""
    if response.status_code != 200:
        return http_problem(response)
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any decoding problem is a wrong body
        return f"body is not JSON: {(response.text or '')[:80]!r}"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    version = body.get("version")
    if not isinstance(version, str) or not version.startswith("PostgreSQL "):
        return f"version is not a PostgreSQL version string: {str(version)[:60]!r}"
    if body.get("item") != item:
        return f"asked for item {item}, got {body.get('item')!r}"
    result, source, strategy = body.get("cache"), body.get("source"), body.get("strategy")
    # Any strategy name the app reports (cachelab.config.STRATEGIES is the list).
    if (
        result not in RESULTS
        or source not in SOURCES
        or not isinstance(strategy, str)
        or not strategy.replace("-", "").isalpha()
    ):
        return f"unexpected cache/source/strategy: {result!r}/{source!r}/{strategy!r}"
    if response.headers.get("X-Cache") != result:
        return f"X-Cache {response.headers.get('X-Cache')!r} disagrees with body {result!r}"
    if bypass or strategy == "none":
        if result != "BYPASS" or source != "database":
            return f"expected an uncached answer, got {result} from {source}"
    elif result == "BYPASS" and body.get("detail") != "redis-unavailable":
        return f"strategy {strategy} bypassed the cache ({body.get('detail')!r})"
    return None


def check_page(response, item: int) -> str | None:
    if response.status_code != 200:
        return http_problem(response)
    if not response.headers.get("Content-Type", "").startswith("text/html"):
        return f"not HTML: {response.headers.get('Content-Type')!r}"
    if response.headers.get("X-Cache") not in RESULTS:
        return f"missing or bad X-Cache: {response.headers.get('X-Cache')!r}"
    text = response.text or ""
    if "PostgreSQL" not in text:
        return "page does not show the PostgreSQL version"
    return None
