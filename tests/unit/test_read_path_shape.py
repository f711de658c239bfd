"""The shape of one read: the rule lives in one class, its collaborators stay narrow.

One read of a cold key (strategy two-tier, tracking connected) is traced with
``sys.setprofile``: it may enter at most five modules of the engine, and no
collaborator may call back into a module that called it (an edge A -> B and
B -> A between the lab's own modules)."""

from __future__ import annotations

import sys
from pathlib import Path

import cachelab
from cachelab.engine.keys import version_target

ENGINE = Path(cachelab.__file__).resolve().parent


def traced(call) -> list[tuple[str, str]]:
    """(caller module, callee module) of every call into the lab's own code."""
    edges: list[tuple[str, str]] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = Path(frame.f_code.co_filename)
        if not callee.is_relative_to(ENGINE):
            return
        back = frame.f_back
        caller = Path(back.f_code.co_filename) if back is not None else Path("-")
        edges.append(
            (
                str(caller.relative_to(ENGINE)) if caller.is_relative_to(ENGINE) else "-",
                str(callee.relative_to(ENGINE)),
            )
        )

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return edges


def test_a_cold_read_visits_at_most_five_engine_modules_without_calling_back(
    settings, db, services
):
    lab = services(settings, db)
    target = version_target(settings.cache_namespace, 1)
    edges = traced(lambda: lab.reads.get(target))
    assert db.calls["version"] == 1  # it was a cold read: it queried
    visited = {callee for _, callee in edges if callee.startswith("engine/")}
    assert len(visited) <= 5, sorted(visited)
    assert "engine/reads.py" in visited
    between = {(a, b) for a, b in edges if a != b and a != "-"}
    back = {(a, b) for a, b in between if (b, a) in between}
    assert not back, sorted(back)


def test_a_hit_from_memory_stays_in_the_read_path_and_tier1(settings, db, services):
    lab = services(settings, db)
    target = version_target(settings.cache_namespace, 2)
    lab.reads.get(target)
    lab.reads.get(target)
    edges = traced(lambda: lab.reads.get(target))
    visited = {callee for _, callee in edges if callee.startswith("engine/")}
    assert visited <= {"engine/reads.py", "engine/tier1.py", "engine/model.py"}, visited
