"""Prometheus under the dashboard, without a stack: the recording rules define
the lab's figures as cachelab.metrics does, quantiles are shown as the bucket
that holds them, and /api/dashboard/series says when Prometheus is off or down."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from cachelab import metrics
from cachelab.web import promql
from loadtest.stack import ROOT
from tests.helpers import serving

EDGE_RULE = "cachelab:edge_served:rate10s"
RULES = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())["groups"][0]["rules"]


def rule(name: str) -> str:
    return next(r["expr"] for r in RULES if r["record"] == name)


def test_the_hit_ratio_rule_is_the_one_definition():
    expr = " ".join(rule("cachelab:hit_ratio:ratio10s").split())
    cached = re.search(r'result=~"([^"]+)"', expr)
    assert cached and set(cached.group(1).split("|")) == set(metrics.CACHED_RESULTS)
    # The edge cache's answers on both sides (cachelab.metrics.hit_ratio's
    # ``edge``); the denominator: every result the counter has.
    assert expr.startswith(
        f"(sum(cachelab:cache_requests:rate10s{{{cached.group(0)}}}) + {EDGE_RULE})"
    )
    assert expr.endswith(f"/ (sum(cachelab:cache_requests:rate10s) + {EDGE_RULE})")


def test_the_edge_s_answers_are_its_served_statuses_on_the_lookup_routes():
    expr = " ".join(rule(EDGE_RULE).split())
    assert expr == f"sum(rate({promql.EDGE_SERVED}[10s])) or vector(0)"
    routes = re.search(r'route=~"([^"]+)"', promql.EDGE_SERVED)
    served = re.search(r'cache=~"([^"]+)"', promql.EDGE_SERVED)
    assert promql.EDGE_SERVED.startswith(metrics.EDGE_METRIC + "{")
    assert routes and set(routes.group(1).split("|")) == set(metrics.EDGE_ROUTES) - {"other"}
    assert served and set(served.group(1).split("|")) == set(metrics.EDGE_SERVED)
    # Requests/s counts them too; the results table shows them as ``edge``.
    assert rule("cachelab:lookup_requests:rate10s").strip().endswith(f"+ {EDGE_RULE}")
    for name in ("results_5m", "results_total"):
        assert f"label_replace(sum({promql.EDGE_SERVED}" in promql.FIGURES[name].replace(
            "increase(", ""
        ), name


def test_requests_and_latency_rules_select_the_lookup_routes():
    for name in (
        "cachelab:lookup_requests:rate10s",
        "cachelab:lookup_duration_seconds_bucket:rate10s",
    ):
        routes = re.search(r'route=~"([^"]+)"', rule(name))
        assert routes and routes.group(1).split("|") == list(promql.LOOKUP_ROUTES), name


def test_every_chart_and_figure_names_a_recorded_rule_or_a_metric_the_lab_exports():
    recorded = {r["record"] for r in RULES}
    for expr in promql.CHARTS.values():
        assert expr in recorded, expr
    exported = {m.name for m in metrics.registry().collect()}
    # PostgreSQL's (through its exporter) and Nginx's
    exported |= {"cachelab_slow_statements", metrics.EDGE_METRIC.removesuffix("_total")}
    used = set(
        re.findall(r"\b(cachelab_[a-z_]+?)(?:_bucket|_total)?\b", " ".join(promql.FIGURES.values()))
    )
    assert used and all(any(name.startswith(e) for e in exported) for name in used), used


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # Ten queries of 10.01 s: all in (10, 12.5]. Interpolation would say p50 11.25 s.
        (0.5, {"5": 0, "10": 0, "12.5": 10, "+Inf": 10}, [10.0, 12.5]),
        (0.95, {"5": 0, "10": 0, "12.5": 10, "+Inf": 10}, [10.0, 12.5]),
        (0.5, {"1": 4, "2": 6, "+Inf": 10}, [1.0, 2.0]),
        (0.4, {"1": 4, "2": 6, "+Inf": 10}, [0.0, 1.0]),
        (0.99, {"1": 4, "2": 6, "+Inf": 10}, [2.0, None]),
        (0.5, {"1": 0, "+Inf": 0}, None),
        (0.5, {}, None),
    ],
)
def test_a_quantile_is_shown_as_the_bucket_that_holds_it(q, buckets, expected):
    assert promql.bucket_interval(q, buckets) == expected


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers every query with one series (value 0.5), or an error when told."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        server.queries.append(query)  # type: ignore[attr-defined]
        if server.fail:  # type: ignore[attr-defined]
            self.send_response(500)
            self.end_headers()
            return
        result: list[dict[str, Any]]
        if self.path.startswith("/api/v1/query_range"):
            result = [{"metric": {}, "values": [[1000, "0.5"], [1002, "NaN"]]}]
        elif "by (le)" in query:
            result = [
                {"metric": {"le": le}, "value": [1002, count]}
                for le, count in (("10", "0"), ("12.5", "3"), ("+Inf", "3"))
            ]
        else:
            result = [{"metric": {"result": "hit"}, "value": [1002, "0.5"]}]
        body = json.dumps({"status": "success", "data": {"result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class FakePrometheusServer(ThreadingHTTPServer):
    # The dashboard sends its queries 8 at a time: with socketserver's default
    # listen backlog of 5, the kernel dropped connections and each page waited
    # out a 1 s SYN retransmit (a real Prometheus listens with a long backlog).
    request_queue_size = 64


@pytest.fixture
def fake_prometheus():
    server = FakePrometheusServer(("127.0.0.1", 0), FakePrometheus)
    server.queries = []  # type: ignore[attr-defined]
    server.fail = False  # type: ignore[attr-defined]
    with serving(server):
        yield server


def test_the_series_come_from_prometheus_with_their_promql(make_app, fake_prometheus):
    url = f"http://127.0.0.1:{fake_prometheus.server_address[1]}"
    client = make_app(prometheus_url=url, prometheus_ui_url="http://127.0.0.1:9090").test_client()
    answer = client.get("/api/dashboard/series")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["status"] == "ok" and body["prometheus_ui"] == "http://127.0.0.1:9090"
    assert body["charts"]["hit_ratio"] == {
        "expr": "cachelab:hit_ratio:ratio10s",
        "points": [[1000.0, 0.5], [1002.0, None]],  # NaN (0/0: no lookups) is a gap
    }
    assert body["figures"]["results_total"] == {"hit": 0.5}
    assert body["figures"]["slow_quantile_buckets"] == {"p50": [10.0, 12.5], "p95": [10.0, 12.5]}
    # Only the fixed queries reach Prometheus, nothing from the request.
    expected = set(promql.CHARTS.values()) | set(promql.FIGURES.values()) | {promql.SLOW_BUCKETS}
    assert set(fake_prometheus.queries) == expected
    assert (
        client.get("/api/dashboard/series?query=up").get_json()["charts"].keys()
        == body["charts"].keys()
    )


def test_the_series_say_when_prometheus_is_down_or_off(make_app, fake_prometheus):
    fake_prometheus.fail = True
    url = f"http://127.0.0.1:{fake_prometheus.server_address[1]}"
    down = make_app(prometheus_url=url).test_client().get("/api/dashboard/series")
    assert down.status_code == 503 and down.headers["Retry-After"] == "2"
    assert down.get_json() == {"status": "unavailable", "reason": "Prometheus answered HTTP 500"}
    off = make_app(prometheus_url=None).test_client().get("/api/dashboard/series")
    assert off.status_code == 200 and off.get_json()["status"] == "off"
    assert "PROMETHEUS_URL is not set" in off.get_json()["reason"]
