"""Redis key layout: ``<namespace>:v<format>:slow_version:<hash>`` (+ ``:lock``).

Namespaced, so several labs can share one Redis; versioned, so a change of the
entry format never reads old entries; hashed, so nothing from a request
reaches a key. ``cachelab cache purge`` deletes ``<namespace>:v<format>:*``.
"""

from __future__ import annotations

import hashlib

from .db import SLOW_QUERY

ENTRY_FORMAT = 1


def cache_key(namespace: str, item: int) -> str:
    digest = hashlib.sha256(f"{SLOW_QUERY}|item={item}".encode()).hexdigest()[:24]
    return f"{namespace}:v{ENTRY_FORMAT}:slow_version:{digest}"


def lock_key(key: str) -> str:
    return f"{key}:lock"


def namespace_pattern(namespace: str) -> str:
    return f"{namespace}:v{ENTRY_FORMAT}:*"
