"""Workers (one Flask app each, as gunicorn runs them) driven through WSGI.

Every request goes through the app's full WSGI stack (the tier-1 hit path,
ProxyFix, Flask, the error handlers) with Flask's test client, one client per
thread, and becomes one :class:`.history.Op`. Flask turns an unexpected
exception into its 500 page, as under gunicorn; an exception that escapes the
app (the WSGI hit path runs before Flask) is recorded as an error too.
"""

from __future__ import annotations

import re
import threading
import traceback
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from loadtest.stack import wait_until

from . import adapter
from .chaos import NetworkFaults
from .fakedb import FakeDatabase
from .history import CRASHED, ERROR, FAIL, OK, History, Op

TOKEN = "checker-write-token-0123456789"
_GENERATION = re.compile(r"#(\d+)$")


class Worker:
    def __init__(self, name: str, settings: adapter.Settings, db: FakeDatabase, seed: int) -> None:
        self.name = name
        self.settings = settings
        self.db = db
        self.faults = NetworkFaults(name, seed)
        self.app: Flask
        self.app, self.redis = adapter.start_worker(settings, db.view(name), self.faults)
        self.killed_at: float | None = None
        self._local = threading.local()

    @property
    def alive(self) -> bool:
        return self.killed_at is None

    def client(self) -> FlaskClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.app.test_client()
        return client

    def readyz(self) -> dict:
        response = self.client().get("/readyz")
        return response.get_json(silent=True) or {}

    def wait_settled(self, timeout: float = 10.0) -> None:
        wait_until(
            lambda: adapter.settled(self.readyz()),
            timeout,
            interval=0.02,
            message=f"{self.name}: Redis up, breaker closed, tracking connected",
        )

    def kill(self, at: float) -> None:
        """SIGKILL: no answer, no release, no renewal, no request any more."""
        if self.killed_at is None:
            self.killed_at = at
        self.db.kill(self.name)  # first: its queries end, no new one starts
        self.faults.kill()

    # -- requests ---------------------------------------------------------------------
    def read(self, history: History, item: int, mode: str) -> Op:
        op = history.invoke(self.name, "read", item=item, mode=mode)
        return self._finish(history, op, "GET", f"/api/items/{item}?mode={mode}")

    def write(self, history: History, item: int, mode: str, payload: str) -> Op:
        op = history.invoke(self.name, "write", item=item, mode=mode)
        return self._finish(
            history,
            op,
            "PUT",
            f"/api/items/{item}?mode={mode}",
            json={"payload": payload},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    def read_version(self, history: History, item: int) -> Op:
        op = history.invoke(self.name, "version", item=item)
        return self._finish(history, op, "GET", f"/api/version?item={item}")

    def _finish(self, history: History, op: Op, method: str, path: str, **kwargs: Any) -> Op:
        try:
            response = self.client().open(path, method=method, **kwargs)
        except Exception:  # escaped the app: gunicorn would answer 500
            return self._complete(history, op, ERROR, detail=traceback.format_exc(limit=8))
        status = response.status_code
        body = response.get_json(silent=True) or {}
        fields: dict[str, Any] = {"status": status}
        if status == 200:
            fields.update(_answer(op.kind, body, response.headers))
            outcome = OK
        elif status == 503:
            detail = response.headers.get("Cache-Status", "")
            fields["detail"] = body.get("error", "?") + (
                "/fill-timeout" if "fill-timeout" in detail else ""
            )
            outcome = FAIL
        elif 400 <= status < 500:
            fields["detail"] = str(body.get("error", body))[:80]
            if status == 404:
                fields.update(_not_found_lookup(response.headers))
            outcome = FAIL
        else:
            fields["detail"] = str(body.get("message", response.data[:200]))
            outcome = ERROR
        return self._complete(history, op, outcome, **fields)

    def _complete(self, history: History, op: Op, outcome: str, **fields: Any) -> Op:
        history.complete(op, outcome, **fields)
        if self.killed_at is not None and op.end > self.killed_at:
            op.outcome = CRASHED  # a killed process gives no answer
        return op


def _not_found_lookup(headers: Any) -> dict[str, Any]:
    """How a cached or just-learnt "not found" was served, from its headers (a
    404 has no body to say it). Without them (an id above the table's range,
    answered before the cache) nothing: no lookup ran. Found by the checker:
    a "not found" queried while an eviction refused the lease's write was
    answered BYPASS and stored nothing, and the next read's query looked
    unexplained."""
    cache = headers.get("X-Cache")
    if cache is None:
        return {}
    status = headers.get("Cache-Status", "")
    if cache == "HIT":
        source = "memory" if "-memory; hit" in status else "redis"
    elif cache == "STALE":
        source = "redis"
    else:
        source = "local" if "-local; hit" in status else "database"
    return {"cache": cache, "source": source, "stored": "stored" in status.split("; ")}


def _answer(kind: str, body: dict, headers: Any) -> dict[str, Any]:
    status = headers.get("Cache-Status", "")
    fields: dict[str, Any] = {
        "source": body.get("source"),
        "cache": body.get("cache"),
        "etag": headers.get("ETag"),
        "stored": "stored" in status.split("; "),
        "detail": body.get("detail") or "",
    }
    if kind == "write":
        fields.update(value=body["item"]["version"], detail=body.get("cache_action", "?"))
        for name in ("source", "cache", "etag", "stored"):
            fields.pop(name)
    elif kind == "read":
        fields["value"] = body["item"]["version"]
    else:
        match = _GENERATION.search(str(body.get("version", "")))
        fields["value"] = int(match.group(1)) if match else None
    return fields
