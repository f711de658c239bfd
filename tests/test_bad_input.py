"""Issue 6: the bad-input suite. Malformed, oversized and slow requests at
Nginx, fuzzed query parameters and headers of the JSON endpoint (Hypothesis,
driven by the endpoint's OpenAPI description), and invalid environment
variables at start-up. Each gets its documented answer, and the stack is
healthy afterwards.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.stack import ROOT, parse_json, wait_until

OPENAPI = json.loads((ROOT / "app" / "cachelab" / "web" / "static" / "openapi.json").read_text())
WARM_ITEMS = ("1", "2", "3")
SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Content-Security-Policy",
    "Permissions-Policy",
)
HEADER_TIMEOUT = 5  # client_header_timeout / client_body_timeout in the nginx template


def assert_healthy(lab) -> None:
    response = lab.get("/api/version?item=1")
    assert response.status_code == 200, response.text[:300]
    assert lab.get("/readyz").status_code == 200


def raw_request(lab, data: bytes, timeout: float = 15) -> bytes:
    """Send bytes as they are (no client-side checks) and read until the server closes."""
    port = int(lab.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    assert match, raw[:200]
    return int(match.group(1))


# -- methods, sizes, headers ----------------------------------------------------
@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"]
)
def test_other_methods_get_405_with_allow(lab, method):
    response = requests.request(method, lab.url("/api/version"), data=b"x" * 10, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert "Retry-After" not in response.headers
    assert parse_json(response)["error"] == "method_not_allowed"
    for header in SECURITY_HEADERS:
        assert header in response.headers


def test_head_is_allowed_and_lowercase_method_is_400(lab):
    assert requests.head(lab.url("/api/version?item=1"), timeout=30).status_code == 200
    raw = raw_request(lab, b"get /api/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 400


def test_oversized_requests_are_refused_at_the_edge(lab):
    long_url = lab.url("/api/version?item=1&pad=" + "a" * 9000)
    assert requests.get(long_url, timeout=10).status_code == 414
    huge_header = requests.get(lab.url("/api/version"), headers={"X-Pad": "a" * 9000}, timeout=10)
    assert huge_header.status_code == 400
    many = {f"X-Pad-{i}": "a" * 7000 for i in range(6)}
    assert requests.get(lab.url("/api/version"), headers=many, timeout=10).status_code == 400
    body = requests.get(lab.url("/api/version"), data=b"a" * 5000, timeout=10)
    assert body.status_code == 413
    assert "Traceback" not in body.text
    assert_healthy(lab)


def test_metrics_and_its_variants_are_not_reachable_from_outside(lab):
    for path in (
        "/metrics",
        "/metrics/",
        "/metrics?x=1",
        "//metrics",
        "/%6Detrics",
        "/metrics/../metrics",
        "/./metrics",
    ):
        response = requests.get(lab.base_url + path, timeout=10)
        assert response.status_code == 404, path
        assert "process_cpu" not in response.text and "cachelab_" not in response.text, path


def test_security_headers_on_every_kind_of_answer(lab):
    answers = [
        lab.get("/api/version?item=1"),
        lab.get("/"),
        lab.get("/nope"),
        lab.get("/api/version?item=x"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 400]
    for answer in answers:
        for header in SECURITY_HEADERS:
            assert header in answer.headers, (answer.status_code, header)
        assert answer.headers["Server"] == "nginx"  # no version
        assert "Retry-After" not in answer.headers and "Allow" not in answer.headers


def _slow_header_client(lab, results: dict, name: str) -> None:
    port = int(lab.base_url.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 10) as sock:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")
        if name == "slow-body":
            sock.sendall(b"Content-Length: 500\r\n\r\n" + b"a" * 10)
        try:
            while sock.recv(4096):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    results[name] = (closed, time.monotonic() - started)


def test_slow_clients_are_cut_off_and_do_not_block_others(lab):
    """Slowloris-style clients (headers or body never finished): Nginx closes
    them after its 5 s client timeouts, and serves everyone else meanwhile."""
    results: dict = {}
    names = [f"slow-headers-{n}" for n in range(10)] + ["slow-body"]
    clients = [
        threading.Thread(target=_slow_header_client, args=(lab, results, name)) for name in names
    ]
    for client in clients:
        client.start()
    try:
        assert_healthy(lab)  # while they hang on
    finally:
        for client in clients:
            client.join(HEADER_TIMEOUT + 15)
    assert set(results) == set(names)
    for name, (closed, seconds) in results.items():
        assert closed, f"{name}: still open after {seconds:.1f}s"
        assert HEADER_TIMEOUT - 1 <= seconds <= HEADER_TIMEOUT + 5, (name, seconds)
    assert_healthy(lab)


# -- rate limit ----------------------------------------------------------------
@pytest.mark.lab_settings(RATE_LIMIT_RPS="2", RATE_LIMIT_BURST="3")
def test_rate_limit_answers_429_with_retry_after_when_on(lab):
    lab.get("/api/version?item=1")
    statuses = []
    session = requests.Session()
    limited = None
    for i in range(30):
        # A spoofed X-Forwarded-For does not make a new client (no trusted proxy).
        response = session.get(
            lab.url("/api/version?item=1"), timeout=10, headers={"X-Forwarded-For": f"10.0.0.{i}"}
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) >= 20, statuses
    assert limited is not None
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["Cache-Control"] == "no-store"
    assert parse_json(limited)["error"] == "too_many_requests"
    wait_until(
        lambda: lab.get("/api/version?item=1", timeout=5).status_code == 200,
        10,
        message="the limit to let requests through again",
    )


def test_rate_limit_is_off_in_the_local_lab(lab):
    session = requests.Session()
    statuses = {
        session.get(lab.url("/api/version?item=1"), timeout=30).status_code for _ in range(60)
    }
    assert statuses == {200}


# -- the request id and the log line ---------------------------------------------
def test_request_id_is_kept_when_well_formed_and_logged_once(lab):
    good = "fault-suite.req_42"
    response = lab.get("/api/version?item=1", headers={"X-Request-ID": good})
    assert response.headers["X-Request-ID"] == good

    def one_log_line():
        lines = [line for line in lab.logs("app", tail=400).splitlines() if good in line]
        return lines if len(lines) == 1 else None

    (line,) = wait_until(one_log_line, 15, message="one app log line with the request id")
    record = json.loads(line.split("|", 1)[1].strip())
    assert record["request_id"] == good and record["status"] == 200
    assert record["cache"] in ("HIT", "MISS", "STALE", "BYPASS")
    assert "duration_ms" in record and "timings_ms" in record
    for bad in ("has space", "a" * 65, "semi;colon", "<script>"):
        answer = lab.get("/api/version?item=1", headers={"X-Request-ID": bad})
        assert answer.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"]), bad


# -- fuzzed query parameters -----------------------------------------------------
def _parameter(name: str) -> dict:
    operation = OPENAPI["paths"]["/api/version"]["get"]
    return next(p for p in operation["parameters"] if p["name"] == name)


def oracle(pairs: list[tuple[str, str]]) -> bool:
    """Valid per the OpenAPI description: known names, each at most once, in range."""
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        return False
    item_schema = _parameter("item")["schema"]
    cache_schema = _parameter("cache")["schema"]
    for name, value in pairs:
        if name == "item":
            if not re.fullmatch(item_schema["pattern"], value):
                return False
        elif name == "cache":
            if value not in cache_schema["enum"]:
                return False
        else:
            return False
    return True


NAMES = st.sampled_from(["item", "cache"]) | st.text(max_size=12)
ITEM_VALUES = st.sampled_from(
    WARM_ITEMS
    + ("01", "0002", "", " 1", "1 ", "+1", "-1", "1.0", "0x1", "１", "١", "10000", "99999", "1e3")
) | st.text(max_size=16)
CACHE_VALUES = st.sampled_from(["", "BYPASS", "bypass ", "yes", "0"]) | st.text(max_size=8)
PAIRS = st.lists(
    st.one_of(
        st.tuples(st.just("item"), ITEM_VALUES),
        st.tuples(st.just("cache"), CACHE_VALUES),
        st.tuples(NAMES, st.text(max_size=8)),
    ),
    max_size=4,
)


@pytest.mark.unit
def test_openapi_description_matches_the_app():
    from cachelab.web import params

    item = _parameter("item")["schema"]
    assert item["maximum"] == params.MAX_ITEM and item["minimum"] == 0
    assert set(OPENAPI["paths"]["/api/version"]["get"]["responses"]) >= {"200", "400", "503"}
    assert {
        p["name"]
        for p in OPENAPI["paths"]["/api/version"]["get"]["parameters"]
        if p["in"] == "query"
    } == set(params.ALLOWED)


@pytest.mark.unit
def test_openapi_describes_the_items_api_as_the_app_checks_it():
    from cachelab import config
    from cachelab.web import items

    path = OPENAPI["paths"]["/api/items/{id}"]
    get_params = {p["name"]: p["schema"] for p in path["get"]["parameters"]}
    assert get_params["id"]["maximum"] == items.MAX_ITEM_ID
    assert tuple(get_params["mode"]["enum"]) == config.INVALIDATION_MODES
    body = path["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["payload"]["maxLength"] == items.MAX_PAYLOAD_BYTES
    assert {"400", "401", "403", "404"} <= set(path["put"]["responses"])


def test_openapi_description_is_served(lab):
    served = lab.get("/static/openapi.json")
    assert served.status_code == 200 and served.json() == OPENAPI


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pairs=PAIRS)
def test_fuzzed_query_parameters_get_200_or_a_clear_400(lab, pairs):
    # Valid requests stay on warm items (or item 0), so no example waits for a slow query.
    pairs = [(n, v) for n, v in pairs if not (n == "cache" and v == "bypass")]
    if oracle(pairs) and dict(pairs).get("item", "0").lstrip("0") not in ("", "1", "2", "3"):
        pairs = [(n, "1" if n == "item" else v) for n, v in pairs]
    query = urllib.parse.urlencode(pairs)
    response = requests.get(lab.url("/api/version?" + query), timeout=30)
    assert "Traceback" not in response.text
    if oracle(pairs):
        assert response.status_code == 200, (query, response.text[:300])
        assert parse_json(response)["version"].startswith("PostgreSQL")
    else:
        assert response.status_code == 400, (query, response.status_code, response.text[:300])
        body = parse_json(response)
        assert body["error"] == "bad_request" and body["message"], body
        assert len(response.text) < 1000


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80))
def test_fuzzed_request_ids_are_kept_or_replaced(lab, value):
    response = lab.get("/api/version?item=1", headers={"X-Request-ID": value})
    assert response.status_code == 200
    if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        assert response.headers["X-Request-ID"] == value
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_nothing_from_a_request_reaches_a_redis_key(lab):
    for value in (
        "1",
        "0001",
        "1 OR 1=1",
        "1;FLUSHALL",
        "*",
        "lab:*",
        "\r\nFLUSHALL\r\n",
        "1'--",
        "%2A",
    ):
        response = lab.get("/api/version", params={"item": value})
        assert response.status_code in (200, 400), (value, response.status_code)
    keys = {k for k in lab.redis_cli("--scan").split() if not k.endswith(":fence")}
    assert len(keys) == 1, keys  # "1" and "0001" are the same item: one key, a hash
    assert re.fullmatch(r"lab:v3:\{version:[0-9a-f]{24}\}", keys.pop()), keys


def test_stack_is_healthy_after_the_bad_input(lab):
    assert_healthy(lab)
    for service in ("nginx", "app", "redis", "postgres"):
        container = lab.container(service)
        container.reload()
        assert container.status == "running", service
        assert container.attrs["RestartCount"] == 0, service


# -- invalid environment at start-up ---------------------------------------------
# Every variable's check runs in the unit layer (tests/unit/test_configuration.py);
# these show that the same checks stop the real containers.
@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("nginx", "RATE_LIMIT_RPS", "fast"),
        ("app", "CACHE_TTL_SECONDS", "ten"),
        ("app", "DATABASE_PASSWORD_FILE", "/run/lab-secrets/nowhere"),
    ],
)
def test_bad_configuration_stops_the_service_naming_the_variable(stack, service, variable, value):
    result = stack.compose(
        "run", "--rm", "--no-deps", "-e", f"{variable}={value}", service, check=False, timeout=120
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"invalid configuration: {variable}" in output, output[-1000:]
    assert "Traceback" not in output
