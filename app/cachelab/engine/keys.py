"""Redis key layout: ``<namespace>:v2:<source>:...`` (+ ``:lock``).

Namespaced, so several labs can share one Redis; versioned (``v2`` is the
entry format of :mod:`cachelab.engine.entry`), so a change of format never reads old
entries; hashed or made of validated integers, so nothing from a request
reaches a key as text. The tracking listener subscribes to the prefix
``<namespace>:v2:``; ``cachelab cache purge`` deletes ``<namespace>:v2:*``.
The fence counter lives outside that prefix (``<namespace>:fence:v2``).
"""

from __future__ import annotations

import hashlib

from ..postgres.database import SLOW_QUERY
from .entry import FORMAT
from .lookup import Target

LOCK_SUFFIX = ":lock"
# The invalidation modes whose write is visible to every later read once the
# PUT has returned (cachelab.engine.writes).
READ_YOUR_WRITES_MODES = frozenset({"delete", "write-through"})


def prefix(namespace: str) -> str:
    return f"{namespace}:v{FORMAT}:"


def namespace_pattern(namespace: str) -> str:
    return f"{prefix(namespace)}*"


def version_target(namespace: str, item: int) -> Target:
    """The seed page's entry: ``slow_version()``, one key per ``item``."""
    digest = hashlib.sha256(f"{SLOW_QUERY}|item={item}".encode()).hexdigest()[:24]
    return Target("version", item, f"{prefix(namespace)}version:{digest}")


def item_target(namespace: str, item_id: int, mode: str, guarded: bool = True) -> Target:
    """An item's entry in the key space of one invalidation mode (modes never
    share entries, so they can be compared side by side)."""
    space = mode if guarded else f"{mode}-unguarded"
    return Target(
        "item",
        item_id,
        f"{prefix(namespace)}item:{space}:{item_id}",
        guarded,
        read_your_writes=mode in READ_YOUR_WRITES_MODES,
    )


def lock_key(key: str) -> str:
    return f"{key}{LOCK_SUFFIX}"
