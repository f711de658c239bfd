"""The circuit breaker, on an injected clock."""

from __future__ import annotations

import threading

import pytest

from cachelab.resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker
from tests.unit.fakes import FakeClock


def call(breaker, func, failures):
    """What the store does: run one Redis call inside the breaker's guard."""
    with breaker.guard(failures):
        return func()


class Down(Exception):
    pass


def fail():
    raise Down()


def ok():
    return "ok"


@pytest.fixture
def clock():
    return FakeClock()


class RecordingBreaker(CircuitBreaker):
    """The breaker, keeping the transitions it reports."""

    def __init__(self, clock) -> None:
        self.transitions: list[tuple[str, str]] = []
        super().__init__(
            3,
            cooldown=5.0,
            clock=clock,
            on_transition=lambda old, new: self.transitions.append((old, new)),
        )


@pytest.fixture
def breaker(clock):
    return RecordingBreaker(clock)


def trip(breaker):
    for _ in range(3):
        with pytest.raises(Down):
            call(breaker, fail, (Down,))


def test_opens_after_consecutive_failures_and_fails_fast(breaker):
    with pytest.raises(Down):
        call(breaker, fail, (Down,))
    assert call(breaker, ok, (Down,)) == "ok"  # a success resets the count
    trip(breaker)
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen):
        call(breaker, ok, (Down,))


def test_half_open_lets_exactly_one_probe_through(breaker, clock):
    trip(breaker)
    clock.advance(5.0)
    assert breaker.state == HALF_OPEN
    inside, release = threading.Event(), threading.Event()

    def probe():
        inside.set()
        release.wait(5)
        return "probe"

    result: dict[str, str] = {}
    thread = threading.Thread(target=lambda: result.update(r=call(breaker, probe, (Down,))))
    thread.start()
    assert inside.wait(5)
    with pytest.raises(BreakerOpen, match="probe in flight"):
        call(breaker, ok, (Down,))
    release.set()
    thread.join(5)
    assert result["r"] == "probe" and breaker.state == CLOSED
    assert breaker.transitions == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_a_failed_probe_opens_it_for_another_full_cooldown(breaker, clock):
    trip(breaker)
    clock.advance(5.0)
    with pytest.raises(Down):
        call(breaker, fail, (Down,))
    assert breaker.state == OPEN
    clock.advance(4.9)
    with pytest.raises(BreakerOpen):
        call(breaker, ok, (Down,))
    clock.advance(0.1)
    assert call(breaker, ok, (Down,)) == "ok" and breaker.state == CLOSED


def test_a_success_admitted_before_it_opened_does_not_skip_the_cooldown(breaker, clock):
    """Defect: a call admitted while closed that succeeded after the breaker
    opened closed it again, so it flapped with Redis near its timeout."""
    inside, release = threading.Event(), threading.Event()

    def slow_ok():
        inside.set()
        release.wait(5)
        return "late"

    thread = threading.Thread(target=lambda: call(breaker, slow_ok, (Down,)))
    thread.start()
    assert inside.wait(5)
    trip(breaker)  # three failures while the slow call is in flight
    release.set()
    thread.join(5)
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen):
        call(breaker, ok, (Down,))


def test_a_straggling_failure_does_not_restart_the_cooldown(breaker, clock):
    inside, release = threading.Event(), threading.Event()

    def slow_fail():
        inside.set()
        release.wait(5)
        raise Down()

    raised: list[BaseException] = []

    def straggler() -> None:
        try:
            call(breaker, slow_fail, (Down,))
        except BaseException as exc:  # noqa: BLE001 - checked below, in the test's thread
            raised.append(exc)

    thread = threading.Thread(target=straggler)
    thread.start()
    assert inside.wait(5)
    trip(breaker)
    clock.advance(4.0)
    release.set()
    thread.join(5)
    assert [type(exc) for exc in raised] == [Down]
    clock.advance(1.0)
    assert breaker.state == HALF_OPEN


def test_other_exceptions_are_not_a_verdict_and_free_the_probe(breaker, clock):
    trip(breaker)
    clock.advance(5.0)
    with pytest.raises(KeyError):
        call(breaker, lambda: dict[str, int]()["x"], (Down,))
    assert call(breaker, ok, (Down,)) == "ok" and breaker.state == CLOSED


# -- what the metric says across gunicorn workers ----------------------------------------
WORKER = """
from cachelab.engine.store import _record_transition
from cachelab.resilience.breaker import CircuitBreaker
from tests.unit.fakes import FakeClock
from tests.unit.test_breaker import Down, call, fail, ok

clock = FakeClock()
breaker = CircuitBreaker(1, cooldown=1.0, on_transition=_record_transition, clock=clock)
try:
    call(breaker, fail, (Down,))  # the fault: this worker's breaker opens
except Down:
    pass
if {probe!r}:  # a request after the fault ended: the probe closes it
    clock.advance(1.0)
    call(breaker, ok, (Down,))
print(breaker.state)
"""
READER = """
from cachelab import metrics
from cachelab.web.dashboard import read_breaker
print(read_breaker(metrics.registry())["state"])
"""


def run_process(code: str, multiproc_dir) -> str:
    """One gunicorn worker's or the dashboard's view, in its own process: the
    multiprocess metric files are chosen when prometheus_client is imported."""
    import os
    import subprocess
    import sys

    from loadtest.stack import ROOT

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("probes", "shown"),
    [((False, True), "closed"), ((True, False), "open")],
    ids=["idle-worker-then-probe", "probe-then-new-fault"],
)
def test_the_breaker_metric_shows_the_latest_change_among_workers(tmp_path, probes, shown):
    """A worker's breaker changes only on its own Redis calls. After a fault, a
    worker that got no request since still says "open" while another worker's
    probe found Redis back; the metric took the worst worker, so the dashboard
    said "open" for as long as one worker stayed idle."""
    for probe in probes:
        state = run_process(WORKER.format(probe=probe), tmp_path)
        assert state == ("closed" if probe else "open")
    assert run_process(READER, tmp_path) == shown
