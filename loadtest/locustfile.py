"""Locust scenarios for the caching lab (FastHttpUser, one class per scenario).

=================  ===========  ==================================================
class              tag          what it does
=================  ===========  ==================================================
``HotKeyUser``     ``hot``      one key (item 0) through the cache: JSON and page
``UncachedUser``   ``uncached`` the same key with ``cache=bypass``: the baseline
``ZipfUser``       ``zipf``     items 1..N with Zipf(s) popularity: the hit ratio
                                depends on the TTL and on N
``ColdStartUser``  ``cold``     every user on the same *new* key each period:
                                a burst of misses on a cold key (a stampede for
                                cache-aside, one query for swr)
``ItemWriter``     ``writes``   PUTs to the items of one invalidation variant
                                (``--variant``), recording each confirmed
                                version, then reads its own write back
``ItemReader``     ``writes``   GETs those items and judges each answer against
                                the writers' record (loadtest/staleness.py)
=================  ===========  ==================================================

The writer and reader scenarios share their record (loadtest/ledger.py) in one
process: run them headless and undistributed (``python -m loadtest.bench
staleness`` does). Writers need ``WRITE_API_TOKEN`` in their environment.
``--requests-out FILE`` writes every request (start, response time, failed)
as CSV when Locust quits: the benchmarks compute their percentiles and
per-second throughput from it, not from Locust's sliding windows.

Pick scenarios by class name (``locust -f loadtest/locustfile.py HotKeyUser``),
by tag (``--tags zipf cold``) or in the web UI (``--class-picker``). Requests
are grouped with ``name=`` and judged with ``catch_response``: a 200 whose
body is not the lab's answer for the requested item is a failure.

Options of this file (command line, locust.conf, ``LOCUST_*`` environment,
or the web UI): ``--wait-min/--wait-max`` (think time, s), ``--zipf-keys``,
``--zipf-exponent``, ``--cold-period``, and the thresholds
``--max-fail-ratio`` / ``--max-p95-ms``, checked when Locust quits: a breach
sets a non-zero exit code.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import logging
import os
import random
import time
from functools import lru_cache

import gevent
from locust import events, tag, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import WorkerRunner

from loadtest import requestlog  # noqa: F401 -- registers --requests-out's record
from loadtest.checks import check_lookup, check_page, http_problem
from loadtest.ledger import Ledger, variant_items, variant_query

log = logging.getLogger("cachelab.locust")

HOT_ITEM = 0
COLD_FIRST_ITEM = 9000  # cold keys live in 9000-9999, away from the Zipf range
DASHBOARD_ITEMS = range(8000, 9000)  # the dashboard's burst button: no scenario reads them
COLD_SPAN = 1000
MAX_ZIPF_KEYS = DASHBOARD_ITEMS.start - 1


@events.init.add_listener
@events.test_start.add_listener
def _fresh_clock(**_kwargs) -> None:
    """gevent's timers count from its loop's cached clock, set when the hub was
    made; on a busy machine Locust's imports can outlast a short ``--run-time``,
    and its run-time timer then fires at once (a run of no requests). Bring the
    clock up to date before Locust starts that timer."""
    gevent.get_hub().loop.update_now()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    # On the parser itself, not a group: only it knows include_in_web_ui.
    group = parser
    group.add_argument(
        "--wait-min",
        type=float,
        default=0.1,
        env_var="LOCUST_WAIT_MIN",
        include_in_web_ui=True,
        help="shortest think time between requests (s)",
    )
    group.add_argument(
        "--wait-max",
        type=float,
        default=0.5,
        env_var="LOCUST_WAIT_MAX",
        include_in_web_ui=True,
        help="longest think time between requests (s)",
    )
    group.add_argument(
        "--zipf-keys",
        type=int,
        default=1000,
        env_var="LOCUST_ZIPF_KEYS",
        include_in_web_ui=True,
        help=f"ZipfUser key space: items 1..N (N <= {MAX_ZIPF_KEYS})",
    )
    group.add_argument(
        "--zipf-exponent",
        type=float,
        default=1.1,
        env_var="LOCUST_ZIPF_EXPONENT",
        include_in_web_ui=True,
        help="ZipfUser skew s: P(rank k) ~ 1/k^s",
    )
    group.add_argument(
        "--cold-period",
        type=float,
        default=15.0,
        env_var="LOCUST_COLD_PERIOD",
        include_in_web_ui=True,
        help="ColdStartUser moves every user to a new cold key every N s",
    )
    group.add_argument(
        "--variant",
        default="delete",
        env_var="LOCUST_VARIANT",
        include_in_web_ui=True,
        help="ItemWriter/ItemReader: the invalidation variant (ttl, delete, "
        "delete-unguarded, write-through, write-through-unguarded, notify)",
    )
    group.add_argument(
        "--payload-bytes",
        type=int,
        default=256,
        env_var="LOCUST_PAYLOAD_BYTES",
        include_in_web_ui=True,
        help="ItemWriter: bytes per written payload",
    )
    group.add_argument(
        "--writers",
        type=int,
        default=2,
        env_var="LOCUST_WRITERS",
        include_in_web_ui=False,
        help="ItemWriter: how many writer users",
    )
    group.add_argument(
        "--staleness-out",
        default=None,
        env_var="LOCUST_STALENESS_OUT",
        include_in_web_ui=False,
        help="write the writers' and readers' staleness summary (JSON) here",
    )
    group.add_argument(
        "--requests-out",
        default=None,
        env_var="LOCUST_REQUESTS_OUT",
        include_in_web_ui=False,
        help="write every request (start, response time, failed) here as CSV at quit",
    )
    group.add_argument(
        "--max-fail-ratio",
        type=float,
        default=None,
        env_var="LOCUST_MAX_FAIL_RATIO",
        include_in_web_ui=False,
        help="exit non-zero when failures/requests exceeds this (0-1)",
    )
    group.add_argument(
        "--max-p95-ms",
        type=float,
        default=None,
        env_var="LOCUST_MAX_P95_MS",
        include_in_web_ui=False,
        help="exit non-zero when the overall 95th percentile exceeds this (ms)",
    )


def _option(user, name: str, default):
    options = getattr(user.environment, "parsed_options", None)
    value = getattr(options, name, None) if options is not None else None
    return default if value is None else value


@lru_cache(maxsize=16)
def _zipf_cumulative(keys: int, exponent: float) -> tuple[float, ...]:
    return tuple(itertools.accumulate(1.0 / rank**exponent for rank in range(1, keys + 1)))


def zipf_item(keys: int, exponent: float, rng: random.Random | None = None) -> int:
    """Item 1..keys, rank k drawn with probability proportional to 1/k^exponent."""
    draw = rng.random() if rng is not None else random.random()
    cumulative = _zipf_cumulative(keys, exponent)
    return 1 + bisect.bisect_left(cumulative, draw * cumulative[-1])


class LabUser(FastHttpUser):
    """Shared plumbing: think time from the options, judged requests."""

    abstract = True
    # Long enough for the uncached baseline at the default 10 s delay under load.
    network_timeout = 65.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        low = _option(self, "wait_min", 0.1)
        high = max(low, _option(self, "wait_max", 0.5))
        return random.uniform(low, high)

    def lookup(self, item: int, name: str, bypass: bool = False) -> None:
        path = f"/api/version?item={item}" + ("&cache=bypass" if bypass else "")
        with self.client.get(path, name=name, catch_response=True) as response:
            problem = check_lookup(response, item, bypass)
            if problem:
                response.failure(problem)
            else:
                response.success()

    def page(self, item: int, name: str) -> None:
        with self.client.get(
            f"/?item={item}", name=name, catch_response=True, headers={"Accept": "text/html"}
        ) as response:
            problem = check_page(response, item)
            if problem:
                response.failure(problem)
            else:
                response.success()


class HotKeyUser(LabUser):
    """One hot key through the cache: nearly every request should be a hit."""

    weight = 3

    @tag("hot")
    @task(9)
    def hot_json(self) -> None:
        self.lookup(HOT_ITEM, "hot: /api/version?item=0")

    @tag("hot")
    @task(1)
    def hot_page(self) -> None:
        self.page(HOT_ITEM, "hot: /?item=0")


class UncachedUser(LabUser):
    """The same key with cache=bypass: every request waits for the slow query."""

    weight = 1

    @tag("uncached")
    @task
    def uncached(self) -> None:
        self.lookup(HOT_ITEM, "uncached: /api/version?cache=bypass", bypass=True)


class ZipfUser(LabUser):
    """Many keys with skewed popularity: hit ratio = f(TTL, key space, skew)."""

    weight = 3

    @tag("zipf")
    @task
    def zipf(self) -> None:
        keys = min(max(1, int(_option(self, "zipf_keys", 1000))), MAX_ZIPF_KEYS)
        item = zipf_item(keys, float(_option(self, "zipf_exponent", 1.1)))
        self.lookup(item, "zipf: /api/version?item=[1..N]")


class ColdStartUser(LabUser):
    """All users move to the same never-seen key every period: a cold-start burst."""

    weight = 1

    @tag("cold")
    @task
    def cold(self) -> None:
        period = max(1.0, float(_option(self, "cold_period", 15.0)))
        item = COLD_FIRST_ITEM + int(time.time() // period) % COLD_SPAN
        self.lookup(item, "cold: /api/version?item=[cold]")


# -- writes and staleness ----------------------------------------------------------
LEDGER = Ledger()


class _ItemUser(LabUser):
    abstract = True

    def on_start(self) -> None:
        self.variant = str(_option(self, "variant", "delete"))
        self.items = variant_items(self.variant)
        self.query = variant_query(self.variant)

    def read_item(self, item: int, name: str) -> int | None:
        with self.client.get(
            f"/api/items/{item}?{self.query}", name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(http_problem(response))
                LEDGER.error(self.variant)
                return None
            try:
                version = int(response.json()["item"]["version"])
            except Exception:  # noqa: BLE001 - any malformed body is a failure
                response.failure("body is not an item with a version")
                return None
            response.success()
            return version


class ItemWriter(_ItemUser):
    """Writes an item of its variant, records the confirmed version, reads it back."""

    weight = 1

    @tag("writes")
    @task
    def write(self) -> None:
        item = random.choice(self.items)
        size = max(1, int(_option(self, "payload_bytes", 256)))
        payload = f"{self.variant}-{time.time():.6f}-".ljust(size, "x")[:size]
        headers = {"Authorization": f"Bearer {os.environ.get('WRITE_API_TOKEN', '')}"}
        started = time.monotonic()
        with self.client.put(
            f"/api/items/{item}?{self.query}",
            json={"payload": payload},
            headers=headers,
            name=f"write: PUT /api/items/[id] ({self.variant})",
            catch_response=True,
        ) as response:
            confirmed = time.monotonic()
            if response.status_code != 200:
                response.failure(http_problem(response))
                LEDGER.error(self.variant)
                return
            version = int(response.json()["item"]["version"])
            response.success()
        LEDGER.committed(self.variant, item, version, confirmed, confirmed - started)
        own = self.read_item(item, f"write: own read ({self.variant})")
        if own is not None:
            LEDGER.own_read(self.variant, version, own)


class ItemReader(_ItemUser):
    """Reads the items of its variant and judges every answer against the record."""

    weight = 4

    @tag("writes")
    @task
    def read(self) -> None:
        item = random.choice(self.items)
        started = time.monotonic()
        version = self.read_item(item, f"read: GET /api/items/[id] ({self.variant})")
        if version is not None:
            LEDGER.read(self.variant, item, version, started)


@events.init.add_listener
def _writer_count(environment, **_kwargs) -> None:
    options = getattr(environment, "parsed_options", None)
    writers = getattr(options, "writers", None)
    if writers:
        ItemWriter.fixed_count = int(writers)


@events.quitting.add_listener
def _staleness_summary(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    path = getattr(environment.parsed_options, "staleness_out", None)
    if path:
        with open(path, "w") as handle:
            json.dump(LEDGER.summary(), handle, indent=2)


@events.quitting.add_listener
def _thresholds(environment, **_kwargs) -> None:
    """Fail the run (exit code 1) when a given limit is exceeded."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or a standalone runner) judges the aggregated stats
    options = environment.parsed_options
    total = environment.stats.total
    breaches = []
    max_fail_ratio = getattr(options, "max_fail_ratio", None)
    if max_fail_ratio is not None and total.fail_ratio > max_fail_ratio:
        breaches.append(f"failure ratio {total.fail_ratio:.4f} > {max_fail_ratio:g}")
    max_p95 = getattr(options, "max_p95_ms", None)
    if max_p95 is not None and total.num_requests:
        p95 = total.get_response_time_percentile(0.95)
        if p95 > max_p95:
            breaches.append(f"p95 {p95:.0f} ms > {max_p95:g} ms")
    if max_p95 is not None and not total.num_requests:
        breaches.append("no requests were made, so p95 cannot be judged")
    if breaches:
        log.error("threshold exceeded: %s", "; ".join(breaches))
        environment.process_exit_code = 1
    elif max_fail_ratio is not None or max_p95 is not None:
        log.info(
            "thresholds met (failure ratio %.4f, p95 %s ms)",
            total.fail_ratio,
            total.get_response_time_percentile(0.95) if total.num_requests else "n/a",
        )


@events.quitting.add_listener
def _final_csv(environment, **_kwargs) -> None:
    """Rewrite the --csv files with the final figures.

    Locust refreshes them once a second while running and not again at exit,
    so requests that finished in the last second would be missing.
    """
    if isinstance(environment.runner, WorkerRunner):
        return
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("stats", writer.requests_csv),
        ("failures", writer.failures_csv),
        ("exceptions", writer.exceptions_csv),
    ):
        with open(f"{prefix}_{suffix}.csv", "w", newline="") as handle:
            write(csv.writer(handle))
