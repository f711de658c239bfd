"""Response headers that show what the cache did: X-Cache, Cache-Status, Server-Timing.

``Cache-Status`` follows RFC 9211 (``hit``, ``fwd=miss|stale|bypass|request``,
``ttl``, ``stored``, ``collapsed``, ``detail``); ``Server-Timing`` the W3C
draft, so browsers' developer tools show the cache and database time.
"""

from __future__ import annotations

import math

from .cache import BYPASS, HIT, MISS, STALE, Lookup

CACHE_NAME = "lab"


def x_cache(lookup: Lookup) -> str:
    return lookup.result


def cache_status(lookup: Lookup) -> str:
    ttl = None if lookup.ttl_remaining is None else math.floor(lookup.ttl_remaining)
    if lookup.result == HIT:
        return f"{CACHE_NAME}; hit; ttl={max(ttl, 0)}"
    if lookup.result == STALE:
        return f"{CACHE_NAME}; hit; fwd=stale; ttl={min(ttl, -1)}"
    if lookup.result == MISS:
        parts = [CACHE_NAME, "fwd=miss"]
        if lookup.stored:
            parts.append("stored")
        if lookup.detail == "collapsed":
            parts.append("collapsed")
        elif lookup.detail:
            parts.append(f"detail={lookup.detail}")
        if ttl is not None:
            parts.append(f"ttl={max(ttl, 0)}")
        return "; ".join(parts)
    assert lookup.result == BYPASS
    if lookup.detail == "request":
        return f"{CACHE_NAME}; fwd=request"
    status = f"{CACHE_NAME}; fwd=bypass; detail={lookup.detail}"
    if lookup.source == "local":
        status += f", {CACHE_NAME}-local; hit"
    return status


def server_timing(timings_ms: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.1f}" for name, value in timings_ms.items())
