"""The fill lock as a lease: short, renewed while its holder works, fenced.

Rules
-----
* A lease is ``SET lock token NX PX lease`` (released only by its owner, by a
  Lua script). Winning it also yields a **fencing token** from one Redis
  counter; the entry written under the lease carries it, and guarded writes
  refuse an older one. A holder that stalled past its lease can therefore
  never overwrite the work of the next holder.
* While the holder works, a keeper thread renews every lease it holds every
  ``lease / 3`` seconds. The lease thus covers the holder's *whole* path
  (waiting for a pool connection, reconnecting, the query) however long it
  takes, and nothing else has to guess that duration.
* A holder that dies (SIGKILL, a lost network, a Redis blip that made the
  release fail) stops renewing: its lease ends within ``lease`` seconds, and
  the next request takes over. No request waits on an orphan for longer.
* A lease that could not be renewed is marked ``lost``; its holder finishes,
  and its write is still safe because of the fence.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field

from .store import CacheUnavailable, RedisStore

log = logging.getLogger(__name__)


@dataclass
class Lease:
    lock_key: str
    token: str
    fence: int
    lost: bool = field(default=False)


@dataclass(frozen=True)
class Busy:
    """Someone else holds the lease; it lives at most ``seconds`` more."""

    seconds: float


class Leases:
    def __init__(self, store: RedisStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def try_acquire(self, lock_key: str) -> Lease | Busy:
        """Take the lease now or say how long the current one still lives.

        Raises :class:`CacheUnavailable` when Redis cannot tell."""
        token = secrets.token_hex(16)
        result = self.store.acquire(lock_key, token, self.lease_ms)
        if result < 0:
            return Busy(-result / 1000)
        lease = Lease(lock_key, token, result)
        with self._lock:
            self._held[token] = lease
            self._ensure_keeper()
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.token, None)
        if not lease.lost:
            self.store.release(lease.lock_key, lease.token)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def renew_all(self) -> None:
        """One round of renewals (the keeper's body; tests call it directly)."""
        for lease in self.held():
            try:
                renewed = self.store.extend(lease.lock_key, lease.token, self.lease_ms)
            except CacheUnavailable:
                renewed = False
            if not renewed:
                lease.lost = True
                with self._lock:
                    self._held.pop(lease.token, None)
                log.warning("fill lease lost", extra={"lock": lease.lock_key})

    def close(self) -> None:
        """Stop renewing and release what is held (worker exit)."""
        self._stopped = True
        self._wake.set()
        for lease in self.held():
            self.release(lease)

    def _ensure_keeper(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
            self._thread.start()

    def _keep(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stopped:
            self._wake.wait(interval)
            if self._stopped:
                return
            self.renew_all()
