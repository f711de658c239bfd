"""The dashboard's figures, read from Prometheus with PromQL.

Prometheus (compose.yaml) scrapes every app container, Nginx's request counts,
the Redis exporter and the PostgreSQL exporter; its recording rules
(``prometheus/rules.yml``) define the lab's figures once: the hit ratio and
requests/s (the edge cache's answers included), latency quantiles (the app's),
slow queries/s. The page asks the app for this fixed set of queries
(``/api/dashboard/series``); the app runs them against Prometheus' HTTP API and
hands back what Prometheus answered. The browser computes nothing but the
drawing, history lives in Prometheus (it survives a reload), and no PromQL
from a request ever reaches Prometheus.

Two figures are shown as what they are rather than as an interpolation:

* slow-query durations: PostgreSQL's exact mean, minimum and maximum
  (``pg_stat_statements``), and for the app's histogram the bucket that holds a
  quantile -- ``(10 s, 12.5 s]`` -- not a value made up inside it;
* app containers: those Prometheus scrapes successfully now (``up``), not
  every container a page has heard of since it opened.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Routes whose requests are cache lookups (the page, its JSON twin, items): the
# requests/s and latency rules select these (prometheus/rules.yml).
LOOKUP_ROUTES = ("/", "/api/version", "/api/items/<raw_id>")
HISTORY_SECONDS = 300
STEP_SECONDS = 2
TIMEOUT_SECONDS = 3.0
PARALLEL_QUERIES = 8

# The lookups Nginx answered from its edge cache (CACHE_STRATEGY=edge), counted
# by Nginx (cachelab.metrics: EDGE_METRIC, EDGE_SERVED): they never reach the
# app. The results table shows them as one more result, ``edge``.
EDGE_SERVED = (
    'cachelab_edge_requests_total{route=~"version|page|items",'
    'cache=~"hit|stale|updating|revalidated"}'
)


def _with_edge(by_result: str, edge: str) -> str:
    """``by_result`` (one series per result) plus the edge's answers as ``edge``."""
    return f'{by_result} or label_replace(sum({edge}), "result", "edge", "", "")'


# Charts: one range query each over the last HISTORY_SECONDS.
CHARTS = {
    "hit_ratio": "cachelab:hit_ratio:ratio10s",
    "requests": "cachelab:lookup_requests:rate10s",
    "slow_queries": "cachelab:slow_queries:rate30s",
    "p50": "cachelab:lookup_duration_seconds:p50_10s",
    "p95": "cachelab:lookup_duration_seconds:p95_10s",
    "p99": "cachelab:lookup_duration_seconds:p99_10s",
}
# Tables and tiles: instant queries. Labelled results come back as {label: value}.
FIGURES = {
    "app_containers": "cachelab:app_containers:up",
    "results_5m": _with_edge(
        "sum by (result) (increase(cachelab_cache_requests_total[5m]))",
        f"increase({EDGE_SERVED}[5m])",
    ),
    "results_total": _with_edge("sum by (result) (cachelab_cache_requests_total)", EDGE_SERVED),
    "slow_calls_5m": "sum(increase(cachelab_slow_statements_calls[5m]))",
    "slow_calls_total": "sum(cachelab_slow_statements_calls)",
    "slow_mean_5m": "cachelab:slow_query_seconds:mean5m",
    "slow_min": "min(cachelab_slow_statements_min_seconds)",
    "slow_max": "max(cachelab_slow_statements_max_seconds)",
    "item_reads_per_s": "sum by (mode) (rate(cachelab_item_reads_total[5m]))",
    "item_stale_share": (
        'sum by (mode) (rate(cachelab_item_reads_total{freshness="stale"}[5m]))'
        " / sum by (mode) (rate(cachelab_item_reads_total[5m]))"
    ),
    "staleness_p50": (
        "histogram_quantile(0.5, sum by (mode, le) "
        "(rate(cachelab_item_staleness_seconds_bucket[5m])))"
    ),
    "staleness_p99": (
        "histogram_quantile(0.99, sum by (mode, le) "
        "(rate(cachelab_item_staleness_seconds_bucket[5m])))"
    ),
    "evictions_per_s": "sum(rate(redis_evicted_keys_total[30s]))",
    "keyspace_hits_per_s": "sum(rate(redis_keyspace_hits_total[30s]))",
    "keyspace_misses_per_s": "sum(rate(redis_keyspace_misses_total[30s]))",
}
# The app's slow-query histogram over the last 5 minutes, by bucket.
SLOW_BUCKETS = (
    'sum by (le) (increase(cachelab_slow_query_duration_seconds_bucket{outcome="ok"}[5m]))'
)
QUANTILES = (0.5, 0.95)


class PrometheusUnavailable(Exception):
    """Prometheus did not answer, or answered with an error."""


class Prometheus:
    """A small client of Prometheus' HTTP API (``/api/v1/query[_range]``)."""

    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        address = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as answer:  # noqa: S310 - fixed http(s) URL from the settings
                body = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusUnavailable(f"Prometheus did not answer ({reason})") from None
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus: {body.get('error', 'error')}")
        return body["data"]["result"]

    def series(self, expr: str, start: float, end: float, step: float) -> list[list[float | None]]:
        """One series' points [[t, value], ...] (NaN and gaps as None)."""
        result = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        if not result:
            return []
        return [[float(t), _number(v)] for t, v in result[0]["values"]]

    def vector(self, expr: str) -> dict[str, float | None]:
        """An instant query: {first label value or "": value}."""
        found: dict[str, float | None] = {}
        for sample in self._get("/api/v1/query", {"query": expr}):
            labels = {k: v for k, v in sample["metric"].items() if k != "__name__"}
            found[next(iter(labels.values()), "")] = _number(sample["value"][1])
        return found


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) or math.isinf(value) else value


def bucket_interval(q: float, buckets: dict[str, float | None]) -> list[float | None] | None:
    """The histogram bucket that holds quantile ``q``: [lower, upper] bounds
    (upper None for +Inf), or None without observations.

    Prometheus' histogram_quantile() interpolates linearly inside that bucket,
    which invents a spread when every observation sits in one bucket (ten 10.01 s
    queries in (10, 12.5] read as p50 11.25 s); the bucket itself is what the
    histogram knows."""
    bounds = sorted(
        (float(le), count or 0.0) for le, count in buckets.items() if le not in ("", None)
    )
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower = 0.0
    for upper, cumulative in bounds:
        if cumulative >= rank and cumulative > 0:
            return [lower, None if math.isinf(upper) else upper]
        lower = upper
    return None


def read_all(prometheus: Prometheus, now: float | None = None) -> dict[str, Any]:
    """Every chart and figure the dashboard shows, with the PromQL behind each."""
    end = time.time() if now is None else now
    start = end - HISTORY_SECONDS
    # Some twenty small queries, a few at a time: one answer within about one
    # query's time even when the machine is busy.
    with ThreadPoolExecutor(PARALLEL_QUERIES) as pool:
        chart_points = {
            name: pool.submit(prometheus.series, expr, start, end, STEP_SECONDS)
            for name, expr in CHARTS.items()
        }
        vectors = {
            name: pool.submit(prometheus.vector, expr)
            for name, expr in {**FIGURES, "slow_buckets": SLOW_BUCKETS}.items()
        }
        charts = {
            name: {"expr": CHARTS[name], "points": future.result()}
            for name, future in chart_points.items()
        }
        figures: dict[str, Any] = {name: future.result() for name, future in vectors.items()}
    slow_buckets = figures.pop("slow_buckets")
    figures["slow_quantile_buckets"] = {
        f"p{round(q * 100)}": bucket_interval(q, slow_buckets) for q in QUANTILES
    }
    return {
        "status": "ok",
        "range": {"start": start, "end": end, "step": STEP_SECONDS},
        "charts": charts,
        "figures": figures,
        "queries": {**FIGURES, "slow_quantile_buckets": SLOW_BUCKETS},
    }
