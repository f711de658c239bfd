"""Fixtures and hooks of the whole suite (design: docs/testing.md).

Stacks. One real Compose stack per cache engine for the session, started the
first time a test asks for it and removed with ``down -v`` at the end; the
Valkey Cluster's stack (``cluster_lab``) lives for the block of its tests. A test
states the settings it needs with ``@pytest.mark.lab_settings(...)`` (app
variables, and ``app_replicas``); the ``lab`` fixture recreates containers only
when those differ from what the stack runs now, and the tests of a module are
ordered so that tests with the same settings run one after another. Tests
marked ``@pytest.mark.engines`` run once per cache engine (Valkey, Redis 7):
only those whose outcome depends on what the cache server does.

Hooks. The unit layer runs first, the AWS layer last; work that mostly waits
(mypy, the unit layer's Valkey Cluster, the moto apply/destroy) starts as the
session is collected and runs beside the tests; under ``CI=true`` a skip
fails the run; every run records each test's duration (setup, call and
teardown), the background work's and the session's wall time in
results/test-durations.json and prints the slowest 30.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.stack import ENGINES, ROOT, Stack
from tests.helpers import IN_CI, docker_ready, require_tool
from tests.unit.valkey_cluster import start_cluster, stop_cluster

DURATIONS_FILE = ROOT / "results" / "test-durations.json"
SLOWEST_SHOWN = 30
MOTO_TEST = "test_apply_and_destroy_against_moto"
# work started as the session begins, by name: what stops it and gives its wall time
_background: dict[str, Callable[[], float | None]] = {}
_background_seconds: dict[str, float | None] = {}
_session: dict[str, float] = {}  # the session's start and wall time (monotonic clock)


# -- layers, order, skips, durations -----------------------------------------------------
def layer_of(item: pytest.Item) -> str:
    if "/tests/unit/" in str(item.path) or item.get_closest_marker("unit"):
        return "unit"
    if item.get_closest_marker("aws"):
        return "aws"
    return "stack"


def _settings_key(item: pytest.Item) -> str:
    marker = item.get_closest_marker("lab_settings")
    return json.dumps(marker.kwargs if marker else {}, sort_keys=True)


def uses_cluster(item: pytest.Item | None) -> bool:
    return item is not None and "cluster_lab" in getattr(item, "fixturenames", ())


def uses_single(item: pytest.Item) -> bool:
    """A single-node stack: ``stack``, or ``lab`` where a module does not make it
    the cluster's."""
    names = getattr(item, "fixturenames", ())
    return "stack" in names or ("lab" in names and "cluster_lab" not in names)


def pytest_sessionstart(session: pytest.Session) -> None:
    _session["started"] = time.monotonic()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit first (no stack is up while it runs), then the stack layer, AWS last.

    The Valkey Cluster's tests close the stack layer, in one block, so that its
    stack starts once; those of them that need a single-node stack too come
    first in it, so that the single-node stacks go down early (each stack goes
    down after the last test that uses it, see :func:`pytest_runtest_teardown`);
    the drills, which promote replicas and move slots, run last. Within a
    module, tests that need the same stack settings run together (the sort is
    stable: otherwise the file's order), so each module switches the stack's
    settings once per distinct set. Modules stay contiguous, so module-scoped
    fixtures are set up once."""
    rank = {"unit": 0, "stack": 1, "aws": 2}
    module_rank: dict[Path, int] = {}
    for index, item in enumerate(items):
        module_rank.setdefault(item.path, index)
    items.sort(
        key=lambda item: (
            rank[layer_of(item)],
            uses_cluster(item),
            item.get_closest_marker("drills") is not None,
            uses_cluster(item) and not uses_single(item),
            module_rank[item.path],
            _settings_key(item) != json.dumps({}),  # defaults first
            _settings_key(item),
        )
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """The type check (a subprocess) and the unit layer's Valkey Cluster start
    now and run beside the unit layer, which mostly waits on sockets; so do the
    moto apply/destroy's two deployments (the AWS layer's five minutes, nearly
    all the provider's fixed waits), which end beside the promise checker's
    fixed five minutes. The tests that need them collect them. And the last
    test that uses each kind of stack is known now (the run's final order)."""
    _last_users.clear()
    for item in session.items:
        for topology, used in (("single", uses_single(item)), ("cluster", uses_cluster(item))):
            if used:
                _last_users[topology] = item.nodeid
    if session.config.option.collectonly:
        return  # nothing runs: start nothing
    for item in session.items:
        if not isinstance(item, pytest.Function):
            continue
        if item.name == "test_mypy_finds_no_type_errors":
            item.module.start_type_check()
        elif item.name.startswith(MOTO_TEST) and MOTO_TEST not in _background:
            _background[MOTO_TEST] = item.module.stop_deployments
            item.module.start_deployments()
    if any("valkey_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        start_cluster()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    _record_duration(item, report)
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where a skip is a failure: {reason}"


_durations: dict[str, dict[str, float | str]] = {}


def _record_duration(item: pytest.Item, report: pytest.TestReport) -> None:
    entry = _durations.setdefault(item.nodeid, {"layer": layer_of(item), "seconds": 0.0})
    entry["seconds"] = round(float(entry["seconds"]) + report.duration, 3)
    entry[report.when] = round(report.duration, 3)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_cluster()
    for name, stop in _background.items():
        _background_seconds[name] = stop()
    _session["wall"] = round(time.monotonic() - _session.get("started", time.monotonic()), 1)
    if not _durations:
        return
    by_layer: dict[str, float] = {}
    for entry in _durations.values():
        layer = str(entry["layer"])
        by_layer[layer] = round(by_layer.get(layer, 0.0) + float(entry["seconds"]), 1)
    tests = dict(sorted(_durations.items(), key=lambda kv: -float(kv[1]["seconds"])))
    DURATIONS_FILE.parent.mkdir(exist_ok=True)
    DURATIONS_FILE.write_text(
        json.dumps(
            {
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_seconds": _session["wall"],  # collection included
                "seconds_by_layer": by_layer,
                # wall time of work started as the session began, beside the tests
                # (its tests' own figures are only their wait for it)
                "background_seconds": _background_seconds,
                "tests": tests,
            },
            indent=1,
        )
    )


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _durations:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"slowest {SLOWEST_SHOWN} tests (setup + call + teardown)")
    slowest = sorted(_durations.items(), key=lambda kv: -float(kv[1]["seconds"]))
    for nodeid, entry in slowest[:SLOWEST_SHOWN]:
        write(f"{float(entry['seconds']):8.1f}s  {entry['layer']:5}  {nodeid}")
    totals: dict[str, float] = {}
    for entry in _durations.values():
        totals[str(entry["layer"])] = totals.get(str(entry["layer"]), 0.0) + float(entry["seconds"])
    write(
        "by layer: "
        + ", ".join(f"{layer} {seconds:.0f}s" for layer, seconds in sorted(totals.items()))
        + f"; every test's figure in {DURATIONS_FILE.relative_to(ROOT)}"
    )
    for name, seconds in _background_seconds.items():
        if seconds is not None:
            write(f"in the background, beside the tests: {name} {seconds:.0f}s (wall)")
    write(f"the whole session: {_session.get('wall', 0):.0f}s (wall, collection included)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.engines``: the test's ``lab`` once per cache engine."""
    if metafunc.definition.get_closest_marker("engines") and "lab" in metafunc.fixturenames:
        metafunc.parametrize("lab", list(ENGINES), indirect=True, scope="function")


# -- stacks -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_available() -> None:
    require_tool(docker_ready(), "docker engine with the compose plugin")


class Stacks:
    """The session's stacks, one per cache engine (and one for the Valkey
    Cluster), each started on first use."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], Stack] = {}
        self.built = False

    def get(self, engine: str, topology: str = "single") -> Stack:
        name = (engine, topology)
        if name not in self.running:
            lab = Stack.create(engine=engine, topology=topology)
            self.running[name] = lab  # removed at the end even if it fails to start
            if not self.built:
                lab.compose("build", "--quiet", timeout=1200)
                self.built = True
            lab.up()
            lab.wait_ready()
        return self.running[name]

    def remove(self, engine: str, topology: str = "single") -> None:
        """Take one stack down before the session ends."""
        lab = self.running.pop((engine, topology), None)
        if lab is not None and os.environ.get("KEEP_STACK") != "1":
            lab.down()

    def remove_topology(self, topology: str) -> None:
        """Take down every running stack of ``topology`` (on any engine)."""
        for engine, running in list(self.running):
            if running == topology:
                self.remove(engine, running)

    def close(self) -> None:
        if os.environ.get("KEEP_STACK") == "1":
            return
        for lab in self.running.values():
            lab.down()


_pools: list[Stacks] = []  # the session's pool, for the teardown hook
_last_users: dict[str, str] = {}  # topology -> the last test (node id) that uses it


@pytest.fixture(scope="session")
def stacks(docker_available) -> Iterator[Stacks]:
    pool = Stacks()
    _pools.append(pool)
    try:
        yield pool
    finally:
        _pools.remove(pool)
        pool.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Each kind of stack (single-node, cluster) goes down after the last test
    that uses it. Idle stacks are not free on a 2-core machine (a healthcheck a
    second per container, Prometheus scraping): they would load the cluster's
    drills and the AWS layer."""
    yield
    for topology, nodeid in _last_users.items():
        if item.nodeid == nodeid:
            for pool in _pools:
                pool.remove_topology(topology)


@pytest.fixture(scope="session")
def stack(stacks: Stacks) -> Stack:
    """The session's stack on the default cache engine (Valkey), as it is."""
    return stacks.get("valkey")


def _prepared(request: pytest.FixtureRequest, lab: Stack) -> Stack:
    """``lab`` with the test's settings (``lab_settings`` marker, else the test
    defaults), every container running, an empty cache."""
    marker = request.node.get_closest_marker("lab_settings")
    settings = dict(marker.kwargs) if marker else {}
    replicas = int(settings.pop("app_replicas", 1))
    lab.ensure(replicas=replicas, **settings)
    lab.flush_cache()
    return lab


@pytest.fixture
def lab(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """A stack with the test's settings (``lab_settings`` marker, else the test
    defaults), every container running, an empty cache; on Valkey, or on the
    engine ``@pytest.mark.engines`` gives."""
    return _prepared(request, stacks.get(getattr(request, "param", "valkey")))


@pytest.fixture
def cluster_lab(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """As ``lab``, on the Valkey Cluster (compose.cluster.yaml): started by the
    first test that needs it, shared by the cluster's tests (one block, see
    :func:`pytest_collection_modifyitems`), taken down after the last."""
    return _prepared(request, stacks.get("valkey", topology="cluster"))
