"""Redis key layout: ``<namespace>:v<format>:slow_version:<hash>`` (+ ``:lock``),
and the format of the JSON entries stored under it.

Namespaced, so several labs can share one Redis; versioned, so a change of the
entry format never reads old entries; hashed, so nothing from a request
reaches a key. ``cachelab cache purge`` deletes ``<namespace>:v<format>:*``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .db import SLOW_QUERY

ENTRY_FORMAT = 1
LOCK_SUFFIX = ":lock"


def cache_key(namespace: str, item: int) -> str:
    digest = hashlib.sha256(f"{SLOW_QUERY}|item={item}".encode()).hexdigest()[:24]
    return f"{namespace}:v{ENTRY_FORMAT}:slow_version:{digest}"


def lock_key(key: str) -> str:
    return f"{key}{LOCK_SUFFIX}"


def namespace_pattern(namespace: str) -> str:
    return f"{namespace}:v{ENTRY_FORMAT}:*"


def parse_entry(raw: bytes | str | None) -> dict[str, Any] | None:
    """The entry stored under a key, or None if absent or not readable as this
    format (an old or corrupt entry is a miss, never an error)."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    valid = (
        isinstance(entry, dict)
        and entry.get("format") == ENTRY_FORMAT
        and isinstance(entry.get("value"), dict)
        and isinstance(entry.get("soft_expiry"), (int, float))
        and isinstance(entry.get("created"), (int, float))
        and isinstance(entry.get("delta"), (int, float))
    )
    return entry if valid else None
