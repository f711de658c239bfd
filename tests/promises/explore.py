"""Hypothesis explores schedules; a violation comes back with its seed, shrunk.

Each call of :func:`explore` is one Hypothesis run from one seed: up to
``examples`` schedules from :func:`.schedule.schedules`, each run and judged by
:func:`.runner.replay`. When one breaks a promise, Hypothesis shrinks it
(fewer steps, smaller values) for at most ``shrink_seconds``. Results are
remembered per schedule, so the shrunk schedule Hypothesis finally replays is
judged by the run that failed: interleavings are real and never repeat exactly,
and a violation once seen is reported, not lost to an unlucky replay.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import hypothesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from . import schedule as schedule_module
from .checkers import PROMISES
from .runner import Result, replay
from .schedule import Schedule, schedules
from .valkey import Node


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float  # schedules start only within this budget
    examples: int  # schedules per seed
    shrink_seconds: float  # 0: report the first failing schedule as it is
    max_steps: int


class PromiseBroken(AssertionError):
    def __init__(self, result: Result) -> None:
        super().__init__(result.report())
        self.result = result


@dataclass
class Found:
    seed: int
    result: Result
    schedules_run: int  # until the first violation, in this seed
    seconds: float  # until the first violation, in this seed
    shrink_seconds: float

    def message(self, profile: Profile) -> str:
        return (
            f"the {profile.name} profile broke a promise at schedule {self.schedules_run} of "
            f"seed {self.seed} ({self.seconds:.0f} s; then {self.shrink_seconds:.0f} s of "
            f"shrinking):\n{self.result.report()}\n\n"
            f"{'shrunk schedule' if profile.shrink_seconds else 'schedule'}:\n"
            f"{self.result.schedule!r}\n\n"
            f"again: CHECKER_SEED={self.seed} scripts/test -m checker, or "
            "CHECKER_REPLAY='<the schedule above>' scripts/test -m checker"
        )


def promises_checked() -> tuple[str, ...]:
    """CHECKER_PROMISES=a,b limits the checkers (to look past a known defect)."""
    chosen = os.environ.get("CHECKER_PROMISES", "").strip()
    names = tuple(name.strip() for name in chosen.split(",") if name.strip()) or PROMISES
    unknown = set(names) - set(PROMISES)
    if unknown:
        raise ValueError(f"CHECKER_PROMISES: unknown {sorted(unknown)}; known: {PROMISES}")
    return names


def explore(node: Node, seed: int, profile: Profile, deadline: float) -> tuple[Found | None, int]:
    """Run one seed's schedules until ``deadline`` (monotonic); the violation found
    (shrunk), if any, and how many schedules ran."""
    memo: dict[str, Result] = {}
    shrink_until: list[float] = []
    promises = promises_checked()
    started = time.monotonic()
    phases = [Phase.generate] + ([Phase.shrink] if profile.shrink_seconds > 0 else [])

    @hypothesis.seed(seed)
    @settings(
        max_examples=profile.examples,
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
    )
    @given(schedules(max_steps=profile.max_steps))
    def check(schedule: Schedule) -> None:
        key = repr(schedule)
        result = memo.get(key)
        if result is None:
            now = time.monotonic()
            if (shrink_until and now > shrink_until[0]) or (not shrink_until and now > deadline):
                return  # out of time: not run, so not a failure
            result = memo[key] = replay(node, schedule, promises)
        if result.violations:
            if not shrink_until:
                first.extend((len(memo), time.monotonic() - started))
                shrink_until.append(time.monotonic() + profile.shrink_seconds)
            raise PromiseBroken(result)

    first: list[float] = []
    try:
        check()
    except PromiseBroken as broken:
        until, seconds = int(first[0]), first[1]
        shrinking = time.monotonic() - started - seconds
        return Found(seed, broken.result, until, seconds, shrinking), len(memo)
    return None, len(memo)


def schedule_from_text(text: str) -> Schedule:
    """A schedule as a failure printed it (CHECKER_REPLAY)."""
    names = {name: getattr(schedule_module, name) for name in schedule_module.__all__}
    value = eval(text, {"__builtins__": {}}, names)  # noqa: S307 - a developer's own paste
    if not isinstance(value, Schedule):
        raise ValueError("CHECKER_REPLAY must be a Schedule(...) as a failure printed it")
    return value
