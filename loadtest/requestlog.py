"""Every request of a Locust run, for the benchmarks' own percentiles and throughput.

The locustfile imports this module, which registers two listeners: one keeps
each request (start epoch s, response time ms, failed, how it was served:
``X-Cache`` lower-cased, or ``edge`` when Nginx's micro-cache answered -- the
client's view of the hit ratio); the other writes them as CSV to
``--requests-out`` when Locust quits (loadtest/locustcsv.py reads it).
"""

from __future__ import annotations

import csv

from locust import events
from locust.runners import WorkerRunner

REQUESTS: list[tuple[float, float, int, str]] = []
EDGE_SERVED = {"HIT", "STALE", "UPDATING", "REVALIDATED"}


@events.request.add_listener
def _record_request(start_time, response_time, exception, response=None, **_kwargs) -> None:
    headers = getattr(response, "headers", None) or {}
    served = "edge" if headers.get("X-Edge-Cache") in EDGE_SERVED else ""
    served = served or (headers.get("X-Cache") or "").lower()
    REQUESTS.append((start_time, response_time, 0 if exception is None else 1, served))


@events.quitting.add_listener
def _requests_csv(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    path = getattr(environment.parsed_options, "requests_out", None)
    if path:
        with open(path, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["start_s", "response_ms", "failed", "cache"])
            out.writerows(
                (f"{s:.4f}", f"{ms:.3f}", failed, served) for s, ms, failed, served in REQUESTS
            )
