"""The open-loop ladder of ``python -m loadtest.bench capacity``: the rates each
system is offered, their verdicts, and the knee.

Rules, in the order :func:`climb` applies them:

1. **The ladder.** Every system still under the target gets its next rate,
   the systems of one level interleaved in a shuffled order, each level
   ``repeats`` times; a level that misses stops that system's ladder.
2. **The descent.** A system that missed already at its first rate steps
   down by thirds (``--descents``, never below :data:`MIN_RATE`) until a
   rate meets the target.
3. **The bisection.** Between the highest level that met and the lowest that
   missed (a met level above a miss is noise: the miss bounds the knee),
   ``--refine`` times.
4. **Half the knee.** Every system with a knee runs once more at half of it.

A level *meets* the target when its repeats' mean p99 is within it, no
request failed and at most :data:`DROP_TOLERANCE` of them were dropped; a
level whose drops came while k6 used up its CPU is the *generator*'s limit,
not the system's.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from typing import Protocol

from .stats import interval

DROP_TOLERANCE = 0.001  # a step may drop this share of its requests and still hold its rate
GENERATOR_BUSY = 0.9  # cores: k6 used about all it can get
MIN_RATE = 10.0  # below this a step of 10 s is too few requests for a p99


def say(message: str) -> None:
    print(f"bench capacity: {message}", flush=True)


class StepRunner(Protocol):
    """Runs one open-loop step of one system (capacity.Runner: k6 and its meters)."""

    def step(self, system: str, rate: float, seconds: float) -> dict: ...


@dataclass
class Level:
    """One offered rate of one system: its repeats and their verdict."""

    system: str
    rate: float
    kind: str  # ladder, descend, refine, half-knee
    steps: list[dict] = field(default_factory=list)

    def p99(self):
        return interval([s["p99_ms"] for s in self.steps if s["p99_ms"] is not None])

    def verdict(self, target_ms: float) -> str:
        """``met``, ``missed`` (p99 over the target), ``errors``, ``dropped`` or
        ``generator`` (k6 could not send: its own CPU was used up)."""
        if not self.steps:
            return "missed"
        if any(s["errors"] for s in self.steps):
            return "errors"
        scheduled = sum(s["rate"] * s["duration_s"] for s in self.steps)
        dropped = sum(s["dropped"] for s in self.steps)
        if scheduled and dropped / scheduled > DROP_TOLERANCE:
            generator = [s.get("generator_cores") or 0 for s in self.steps]
            if max(generator) >= GENERATOR_BUSY:
                return "generator"
            return "dropped"
        found = self.p99()
        return "met" if found is not None and found.mean <= target_ms else "missed"

    def to_dict(self, target_ms: float) -> dict:
        found = self.p99()

        def figure(key: str):
            values = [s[key] for s in self.steps if s[key] is not None]
            spread = interval(values)
            return None if spread is None else spread.to_dict()

        return {
            "system": self.system,
            "rate": self.rate,
            "kind": self.kind,
            "verdict": self.verdict(target_ms),
            "p99_ms": None if found is None else found.to_dict(),
            "p50_ms": figure("p50_ms"),
            "p999_ms": figure("p999_ms"),
            "achieved_rps": figure("achieved_rps"),
            "max_ms": max((s["max_ms"] or 0 for s in self.steps), default=None),
            "errors": sum(s["errors"] for s in self.steps),
            "dropped": sum(s["dropped"] for s in self.steps),
            "disturbed": sum(1 for s in self.steps if s.get("load", {}).get("disturbed")),
            "steps": self.steps,
        }


def run_levels(
    runner: StepRunner,
    levels: list[Level],
    repeats: int,
    seconds: float,
    rng: random.Random,
) -> None:
    """Each level ``repeats`` times; within a repeat the systems in a shuffled order."""
    for repeat in range(1, repeats + 1):
        order = levels[:]
        rng.shuffle(order)
        for level in order:
            step = runner.step(level.system, level.rate, seconds)
            level.steps.append(step)
            say(
                f"{level.system} {level.kind} {level.rate:,.0f} req/s ({repeat}/{repeats}): "
                f"p99 {_ms(step['p99_ms'])} ms, p99.9 {_ms(step['p999_ms'])} ms, "
                f"{step['errors']} errors, {step['dropped']} dropped"
                + (" (machine disturbed)" if step["load"].get("disturbed") else "")
            )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def climb(
    runner: StepRunner,
    systems: list[str],
    rates: dict[str, list[float]],
    args: argparse.Namespace,
    rng: random.Random,
) -> dict[str, list[Level]]:
    """The ladder, level by level for every system still under the target, then
    the bisections and the half-knee runs."""
    done: dict[str, list[Level]] = {name: [] for name in systems}
    climbing = set(systems)
    for index in range(max(len(r) for r in rates.values())):
        current = [
            Level(name, rates[name][index], "ladder")
            for name in systems
            if name in climbing and index < len(rates[name])
        ]
        if not current:
            break
        run_levels(runner, current, args.repeats, args.step, rng)
        for level in current:
            done[level.system].append(level)
            if level.verdict(args.p99_ms) != "met":
                climbing.discard(level.system)
    descend(runner, systems, done, args, rng)
    for _ in range(args.refine):
        current = []
        for name in systems:
            low, high = bracket(done[name], args.p99_ms)
            if low is not None and high is not None and high.rate - low.rate > 1:
                current.append(Level(name, round((low.rate + high.rate) / 2), "refine"))
        if not current:
            break
        run_levels(runner, current, args.repeats, args.step, rng)
        for level in current:
            done[level.system].append(level)
    halves = []
    for name in systems:
        knee = knee_of(done[name], args.p99_ms)
        if knee is not None:
            halves.append(Level(name, max(1, round(knee.rate / 2)), "half-knee"))
    run_levels(runner, halves, args.repeats, args.step, rng)
    for level in halves:
        done[level.system].append(level)
    return done


def descend(
    runner: StepRunner,
    systems: list[str],
    done: dict[str, list[Level]],
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    """A system that missed already at its first rate steps down by thirds (at most
    ``--descents`` times, not below MIN_RATE) until a rate meets the target.

    The ladder starts at a fraction of the closed-loop rate; for the fastest
    systems (the static page, the edge tier) that fraction is more than the
    system and k6 together hold on this machine, and without a rate that met
    there is no knee to bisect towards: the table would say "none met"."""
    for _ in range(args.descents):
        current = []
        for name in systems:
            tried = done[name]
            if not tried or any(lv.verdict(args.p99_ms) == "met" for lv in tried):
                continue
            lower = round(min(lv.rate for lv in tried) / 3)
            if lower >= MIN_RATE:
                current.append(Level(name, lower, "descend"))
        if not current:
            return
        run_levels(runner, current, args.repeats, args.step, rng)
        for level in current:
            done[level.system].append(level)


def bracket(levels: list[Level], target_ms: float) -> tuple[Level | None, Level | None]:
    """The lowest level that missed the target, and the highest below it that met it
    (a level that met above a miss is noise: the miss bounds the knee)."""
    ladder = sorted((lv for lv in levels if lv.kind != "half-knee"), key=lambda lv: lv.rate)
    missed = [lv for lv in ladder if lv.verdict(target_ms) != "met"]
    high = missed[0] if missed else None
    met = [
        lv
        for lv in ladder
        if lv.verdict(target_ms) == "met" and (high is None or lv.rate < high.rate)
    ]
    return (met[-1] if met else None), high


def knee_of(levels: list[Level], target_ms: float) -> Level | None:
    return bracket(levels, target_ms)[0]
