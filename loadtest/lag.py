"""Tier 1's invalidation lag, measured from outside: how long a worker's memory
copy outlives a write made in Redis.

A SET made outside the app (this process, on Redis' published port; on the
cluster, on the port of the primary that owns the key) against an
entry every connection is served from memory, then GETs at the two-tier app's
port over several keep-alive connections (so every worker answers) until no
answer has the old value -- tests/test_caching_engine.py's method, repeated.
The lag is from the SET's reply to the start of the last request that still got
the old value (0: none did); one poll's round trip is the resolution.
"""

from __future__ import annotations

import json
import threading
import time

import requests

from .stack import Stack, wait_until
from .stats import percentile

PATH = "/api/version"


def invalidation_lag(
    stack: Stack, base_url: str, writes: int, connections: int = 8, clustered: bool = False
) -> dict:
    """``clustered``: the app is on the Valkey Cluster, and the SET goes to the
    primary that owns the key."""
    url = base_url + PATH
    sessions = [requests.Session() for _ in range(connections)]
    barrier = threading.Barrier(connections)

    def connect(session):  # open the connections together: the workers accept them in turn
        barrier.wait(timeout=10)
        return session.get(url, timeout=10).json()

    threads = [threading.Thread(target=connect, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    key = sessions[0].get(url, timeout=10).json()["key"]
    client = stack.node_client(stack.owner_of(key).service if clustered else "redis")
    lags: list[float] = []
    round_trips: list[float] = []  # the polls' own duration: the measurement's resolution
    try:
        for index in range(writes):
            wait_until(
                lambda: all(
                    s.get(url, timeout=5).headers["Cache-Status"].endswith("memory; hit")
                    for s in sessions
                ),
                10,
                interval=0.02,
                message="every connection served from memory",
            )
            raw = client.get(key)
            assert raw is not None, f"{key} vanished"
            entry = json.loads(raw)
            marker = f"written-outside-{index}"
            entry["value"]["version"] = marker
            entry["fence"] += 1
            client.set(key, json.dumps(entry), px=client.pttl(key))
            written = time.perf_counter()
            last_old, deadline, turn = written, written + 2.0, 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                version = sessions[turn % connections].get(url, timeout=5).json()["version"]
                round_trips.append(time.perf_counter() - started)
                turn += 1
                if version != marker:
                    last_old = started
                elif started - last_old > 0.05 and turn >= 2 * connections:
                    break  # 50 ms, and two passes over every connection, of new values only
            lags.append(last_old - written)
    finally:
        client.close()
        for session in sessions:
            session.close()

    def ms(values: list[float], q: float) -> float | None:
        found = percentile(values, q)
        return None if found is None else found * 1000

    return {
        "writes": len(lags),
        "connections": connections,
        "p50_ms": ms(lags, 50),
        "p99_ms": ms(lags, 99),
        "max_ms": max(lags) * 1000 if lags else None,
        "stale_writes": sum(1 for lag in lags if lag > 0),
        "poll_p50_ms": ms(round_trips, 50),
    }
