"""Redis key layout: ``<namespace>:v3:{<source>:...}`` plus ``:lease`` and ``:fence``.

* **Namespaced**, so several labs share one Redis, and one prefix covers
  everything the lab writes: the tracking subscription (``BCAST PREFIX
  <namespace>:v3:``), ``cachelab cache purge`` (``<namespace>:v3:*``) and a
  cache ACL (``~<namespace>:*``) all match it.
* **Versioned** (``v3`` is the entry format of :mod:`cachelab.engine.model`), so a
  change of format never reads old entries.
* **One hash slot per entry.** The part in braces is the hash tag: the entry (or
  its tombstone, or its "not found"), its lease and its fence live in one slot,
  so every Lua script touches one slot and runs on a Redis Cluster; nothing
  ever spans two entries.
* **Nothing from a request reaches a key as text**: keys are made of validated
  integers, a mode from a fixed list, or a hash.
"""

from __future__ import annotations

import hashlib

from .model import FORMAT, Target

# The invalidation modes whose write is visible to every later read once the
# PUT has returned (cachelab.engine.writes).
READ_YOUR_WRITES_MODES = frozenset({"delete", "write-through"})
SUFFIXES = (":lease", ":fence")


def prefix(namespace: str) -> str:
    return f"{namespace}:v{FORMAT}:"


def namespace_pattern(namespace: str) -> str:
    return f"{prefix(namespace)}*"


def version_target(namespace: str, item: int) -> Target:
    """The seed page's entry: ``slow_version()``, one key per ``item``."""
    digest = hashlib.sha256(f"slow_version()|item={item}".encode()).hexdigest()[:24]
    return Target("version", item, f"{prefix(namespace)}{{version:{digest}}}")


def item_target(namespace: str, item_id: int, mode: str, guarded: bool = True) -> Target:
    """An item's entry in the key space of one invalidation mode (modes never
    share entries, so they can be compared side by side)."""
    space = mode if guarded else f"{mode}-unguarded"
    return Target(
        "item",
        item_id,
        f"{prefix(namespace)}{{item:{space}:{item_id}}}",
        guarded,
        read_your_writes=mode in READ_YOUR_WRITES_MODES,
    )


def entry_key(key: str) -> str | None:
    """The entry a key belongs to (its lease or fence), or None outside the layout."""
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key if key.endswith("}") else None
