"""Tier 1: this worker's copies of entries, and the rule that keeps them coherent.

A copy serves two purposes: tier 1 (strategy ``two-tier``: a fresh copy
answers with no round trip to Redis) and *the last copy* (every strategy:
during a Redis outage, or after Redis lost its data, a copy answers until its
hard expiry instead of making a user wait for the query). Deadlines come from
Redis' PTTL when the copy was read, on this worker's monotonic clock, and are
never extended by serving the copy.

Coherence comes from Redis' invalidations, pushed over the tracking
connection(s) that :mod:`cachelab.engine.tracking` keeps open and attaches here
(one on a single node; on a cluster one per node, primaries and replicas: a
replica is the next primary).

Rules
-----
* **Apply what arrived before serving.** Before a copy is served, the request
  takes the lock under which invalidations are applied -- so a message the
  listener has read but not yet applied is applied first -- and reads every
  message already waiting on the connections. An invalidation that reached this
  worker before the request is never ignored.
* **Covered.** A copy is served while it is fresh, valid (no invalidation of its
  key since Redis confirmed it) and covered: every connection was attached
  before the copy was read and has answered a heartbeat sent at most
  ``TRACKING_HEARTBEAT_SECONDS`` ago. Replies on one connection arrive in order,
  so that answer proves every invalidation sent before it was received: a
  silently dead connection leaves a copy stale for at most the heartbeat. On a
  cluster, "every connection" means one to each node of the shard map.
* **A topology change** is treated like a lost connection for the keys it
  touches: a failover or a node added or removed is a new epoch, as a
  re-attachment is (nothing read before it is served); slots moved between
  known nodes invalidate the copies of their keys.
* **Uncovered** (the listener is starting, down, or the server refused
  tracking): a copy read then is served for at most ``MEMORY_FALLBACK_TTL_MS``
  after Redis confirmed it -- never for read-your-writes targets. A copy read
  while covered is never served once coverage is lost.
* **Races.** A copy read before an invalidation of its key and stored after it
  would be stale forever: :meth:`snapshot` is taken before the Redis read and
  :meth:`put` refuses the copy if the key was invalidated, or a connection
  changed, in between. Invalidations are numbered; each key remembers its last
  one in a bounded map, and a key dropped from the map raises a floor that
  every older snapshot fails against (conservative, never wrong).
* **Bounded** by entries and by bytes (the entry as Redis stores it plus the
  bytes prepared for it), least recently used first out.
* **Written back** (reseed) only if Redis had confirmed the copy while covered
  and no invalidation of its key was heard since; re-attaching to the *same*
  server (it may have deleted keys while we were not listening) ends that for
  every copy; ``FLUSHALL``/``FLUSHDB`` drops every copy.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from cachetools import LRUCache
from redis.crc import key_slot

from .. import metrics
from .model import Entry

_REMEMBERED_KEYS_PER_COPY = 4  # invalidation numbers kept, per copy the map may hold
_PUSH = object()  # what the push handler hands back: "that message was an invalidation"
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(eq=False)
class Copy:
    key: str
    entry: Entry
    soft_deadline: float  # monotonic: soft expiry
    hard_deadline: float  # monotonic: hard expiry (Redis would have dropped it)
    confirmed_at: float  # monotonic: when Redis last confirmed it
    epoch: int  # the attachment epoch it was confirmed in
    covered: bool  # confirmed while every connection was attached and alive
    confirmed: bool = True  # in Redis (False: loaded while Redis was down)
    valid: bool = True  # no invalidation of its key since Redis confirmed it
    reseed_epoch: int = -1  # may be written back while this equals the map's
    base_size: int = 0  # the entry's bytes as Redis stores it
    size: int = 0  # bytes counted against LOCAL_CACHE_BYTES: base_size + prepared
    # Bytes prepared once for this generation (see cachelab.web.responses).
    prepared: dict[str, Any] = field(default_factory=dict)
    on_grow: Callable[[Copy], None] | None = field(default=None, repr=False)

    def keep(self, kind: str, value: Any) -> Any:
        """Keep bytes prepared for this copy (counted against the byte bound)."""
        self.prepared[kind] = value
        if self.on_grow is not None:
            self.on_grow(self)
        return value


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    seq: int
    covered: bool


class Link:
    """One attached tracking connection, as the request path sees it."""

    def __init__(
        self, conn: Any, heartbeat_command: tuple[str, ...], now: float, node: str = ""
    ) -> None:
        self.conn = conn
        self.node = node  # the cluster node it listens to ("" on a single node)
        self.sock = conn._sock
        self.heartbeat_command = heartbeat_command
        self.attached_at = now
        self.alive_at = now  # when the last answered heartbeat was sent
        self.ping_sent_at: float | None = None
        self.broken = ""  # why the listener must reconnect ("" while healthy)


class Tier1:
    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        fallback_ttl: float,
        heartbeat: float,
        clock: Callable[[], float],
        heartbeat_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.fallback_ttl = fallback_ttl
        self.heartbeat = heartbeat
        self.clock = clock  # the copies' deadlines (tests inject their own)
        self.heartbeat_clock = heartbeat_clock  # the connections: always real time
        self.invalidations = 0
        self._copies: LRUCache[str, Copy] = LRUCache(max_bytes, getsizeof=_size)
        self._key_seq: OrderedDict[str, int] = OrderedDict()
        self._seq = 0
        self._floor = 0
        self._epoch = 0
        self._reseed_epoch = 0
        self._links: list[Link] = []
        self._expected_links = 0  # how many connections coverage needs (0: none attached)
        self._expected_nodes: frozenset[str] | None = None  # a cluster's: one link each
        self._lock = threading.Lock()  # the copies and the numbering
        self._io_lock = threading.RLock()  # the connections: reading, applying, heartbeats
        self._watchers: dict[str, set[threading.Event]] = {}
        self._on_change: list[Callable[[list[str] | None], None]] = []

    def __len__(self) -> int:
        return len(self._copies)

    @property
    def bytes(self) -> int:
        return int(self._copies.currsize)

    # -- the request path -----------------------------------------------------------
    def servable(self, key: str, read_your_writes: bool) -> Copy | None:
        """A copy tier 1 may serve now, after applying every invalidation received."""
        self.sync()
        with self._lock:
            copy = self._copies.get(key)
        if copy is None or not copy.valid or not copy.confirmed:
            return None
        now = self.clock()
        if now >= copy.soft_deadline:
            return None
        if copy.covered:
            return copy if copy.epoch == self._epoch and self.covered() else None
        if read_your_writes:
            return None
        return copy if now < copy.confirmed_at + self.fallback_ttl else None

    def peek(self, key: str) -> Copy | None:
        """This worker's copy, if any, with no rule applied (the hit path's fast check)."""
        return self._copies.get(key)

    def last_copy(self, key: str) -> Copy | None:
        """This worker's copy, fresh or stale, until its hard expiry."""
        with self._lock:
            copy = self._copies.get(key)
        if copy is None or self.clock() >= copy.hard_deadline:
            return None
        return copy

    def covered(self) -> bool:
        """Every expected connection is attached and answered a recent heartbeat."""
        links = self._links
        if not links or len(links) < self._expected_links:
            return False
        now = self.heartbeat_clock()
        if not all(not link.broken and now - link.alive_at <= self.heartbeat for link in links):
            return False
        nodes = self._expected_nodes
        return nodes is None or nodes <= {link.node for link in links}

    def sync(self) -> None:
        """Apply every invalidation that reached this worker (see the rules)."""
        if not self._links:
            return
        with self._io_lock:
            for link in self._links:
                self._drain(link)
                self._maybe_heartbeat(link)

    # -- copies ---------------------------------------------------------------------
    def snapshot(self, key: str) -> Snapshot:
        with self._lock:
            return Snapshot(self._epoch, self._seq, self.covered())

    def changed_since(self, key: str, snapshot: Snapshot) -> bool:
        """Was ``key`` invalidated, or a connection (re)attached, since ``snapshot``?"""
        with self._lock:
            return self._changed(key, snapshot)

    def _changed(self, key: str, snapshot: Snapshot) -> bool:
        if snapshot.epoch != self._epoch:
            return True
        last = self._key_seq.get(key)
        return (self._floor if last is None else last) > snapshot.seq

    def put(
        self,
        key: str,
        entry: Entry,
        soft_remaining: float,
        hard_remaining: float,
        snapshot: Snapshot,
        confirmed: bool = True,
        size: int = 0,
    ) -> Copy | None:
        """Keep ``entry`` (just read from or written to Redis, with the given
        seconds left) unless an invalidation raced with it. Returns the copy of
        exactly this generation, if one is kept. An entry loaded while Redis was
        down (``confirmed=False``) is kept only as a last copy: never served by
        tier 1, never written back."""
        now = self.clock()
        with self._lock:
            current = self._copies.get(key)
            same = current is not None and current.entry.order == entry.order
            if self._changed(key, snapshot):
                return current if same else None  # raced: keep nothing new
            if current is not None and current.entry.order > entry.order and confirmed:
                return None
            covered = snapshot.covered and self.covered()
            reseed = self._reseed_epoch if covered and confirmed else -1
            if same and confirmed:
                # The same generation, confirmed again: its deadlines stay (a read
                # never extends them), and so do its prepared bytes.
                assert current is not None
                current.confirmed, current.valid = True, True
                current.confirmed_at, current.epoch, current.covered = now, self._epoch, covered
                current.reseed_epoch = reseed
                return current
            copy = Copy(
                key,
                entry,
                now + soft_remaining,
                now + hard_remaining,
                confirmed_at=now,
                epoch=self._epoch,
                covered=covered,
                confirmed=confirmed,
                valid=confirmed,
                reseed_epoch=reseed,
                on_grow=self._regrow,
            )
            copy.base_size = copy.size = size or len(entry.encode())
            return copy if self._store(key, copy) else None

    def _store(self, key: str, copy: Copy) -> bool:
        """Keep ``copy`` within both bounds; False if it alone exceeds the bytes."""
        try:
            self._copies[key] = copy
        except ValueError:  # larger than the whole byte bound: never kept
            self._copies.pop(key, None)
            return False
        while len(self._copies) > self.max_entries:
            self._copies.popitem()
        return True

    def _regrow(self, copy: Copy) -> None:
        """Prepared bytes were added to ``copy``: count them (it may evict others)."""
        with self._lock:
            prepared = sum(len(part) for value in copy.prepared.values() for part in _parts(value))
            copy.size = copy.base_size + prepared
            if self._copies.get(copy.key) is copy:
                self._store(copy.key, copy)

    def reseedable(self, copy: Copy) -> bool:
        return copy.valid and copy.reseed_epoch == self._reseed_epoch

    def forget(self, key: str) -> None:
        """Drop this worker's copy: its own write made it outdated."""
        with self._lock:
            self._copies.pop(key, None)
            self._number([key])

    def _number(self, keys: Iterable[str]) -> None:
        self._seq += 1
        for key in keys:
            self._key_seq[key] = self._seq
            self._key_seq.move_to_end(key)
        limit = max(1, self.max_entries) * _REMEMBERED_KEYS_PER_COPY
        while len(self._key_seq) > limit:
            _, seq = self._key_seq.popitem(last=False)
            self._floor = max(self._floor, seq)

    # -- invalidations (the listener thread, or a request in sync) ---------------------
    def invalidate(self, keys: list[str] | None) -> None:
        """The keys changed in Redis (None: it was flushed)."""
        with self._lock:
            if keys is None:
                self._epoch += 1
                self._copies.clear()
                self._seq += 1
                self._floor = self._seq
            else:
                for key in keys:
                    copy = self._copies.get(key)
                    if copy is not None:
                        copy.valid = False
                self._number(keys)
        self.invalidations += 1
        metrics.INVALIDATIONS.inc()
        self._wake(keys)
        for hook in self._on_change:
            hook(keys)

    def on_change(self, hook: Callable[[list[str] | None], None]) -> None:
        """Call ``hook(keys)`` after every invalidation (e.g. to forget deferrals)."""
        self._on_change.append(hook)

    # -- connections (called by the tracking listener) ----------------------------------
    def attach(
        self, conn: Any, heartbeat_command: tuple[str, ...], same_server: bool, node: str = ""
    ) -> Link:
        """A connection now subscribed to the namespace's invalidations."""
        link = Link(conn, heartbeat_command, self.heartbeat_clock(), node)
        conn._parser.set_invalidation_push_handler(self._on_push)
        with self._io_lock, self._lock:
            self._epoch += 1  # what was read before may have missed invalidations
            if same_server:
                self._reseed_epoch += 1  # and a deletion may have gone unheard
            self._links = [*self._links, link]
        self._wake(None)
        return link

    def detach(self, link: Link) -> None:
        with self._io_lock, self._lock:
            self._links = [other for other in self._links if other is not link]
            self._epoch += 1
        self._wake(None)

    def expect(self, connections: int) -> None:
        """How many connections coverage needs (the listener says; 0 when off)."""
        self._expected_links = connections

    def expect_nodes(self, nodes: frozenset[str]) -> None:
        """A cluster: coverage needs a live connection to each of these nodes."""
        self._expected_nodes = nodes
        self._expected_links = len(nodes)

    def topology_changed(self) -> None:
        """The cluster's members changed (a failover, a node joined or left): a
        new epoch, as a re-attachment is (copies read before may have missed an
        invalidation)."""
        with self._io_lock, self._lock:
            self._epoch += 1
        self._wake(None)

    def slots_moved(self, slots: frozenset[int]) -> None:
        """Slots moved between known nodes: their keys are handled as invalidated
        (copies dropped, reads in flight refused), the others keep their copies."""
        with self._lock:
            keys = [key for key in self._copies if key_slot(key.encode()) in slots]
        if keys:
            self.invalidate(keys)

    def drain(self, link: Link) -> None:
        """Read and apply what is waiting on ``link`` (the listener's wake-up)."""
        with self._io_lock:
            self._drain(link)

    def heartbeat_due(self, link: Link) -> None:
        with self._io_lock:
            self._maybe_heartbeat(link, force=True)

    def _drain(self, link: Link) -> None:
        if link.broken:
            return
        conn = link.conn
        try:
            while conn.can_read(timeout=0):
                try:
                    reply = conn.read_response(
                        push_request=True, timeout=0, disconnect_on_error=False
                    )
                except redis.exceptions.TimeoutError:
                    break  # a partial message: the rest comes with the next wake-up
                except redis.exceptions.ResponseError:
                    # The heartbeat is refused (an ACL without ROLE): use PING.
                    link.heartbeat_command = ("PING",)
                    self._answered(link)
                    continue
                if reply is not _PUSH:
                    self._answered(link, reply)
        except CONNECTION_ERRORS as exc:
            link.broken = f"connection lost: {type(exc).__name__}"
        except (OSError, ValueError) as exc:  # the socket was closed under us
            link.broken = f"connection closed: {type(exc).__name__}"

    def _answered(self, link: Link, reply: Any = None) -> None:
        sent = link.ping_sent_at
        link.ping_sent_at = None
        if sent is not None:
            link.alive_at = sent
        if link.heartbeat_command == ("ROLE",) and isinstance(reply, list) and reply:
            role = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if role != "master":
                link.broken = "the node is no longer a primary"

    def _maybe_heartbeat(self, link: Link, force: bool = False) -> None:
        """Send a heartbeat when none is in flight and the last one is a third of
        the bound old: requests and the listener alike keep the bound fresh."""
        if link.broken:
            return
        now = self.heartbeat_clock()
        if link.ping_sent_at is not None:
            if now - link.ping_sent_at > self.heartbeat:
                link.broken = "no answer to the heartbeat"
            return
        if not force and now - link.alive_at < self.heartbeat / 3:
            return
        try:
            link.conn.send_command(*link.heartbeat_command)
            link.ping_sent_at = now
        except CONNECTION_ERRORS as exc:
            link.broken = f"connection lost: {type(exc).__name__}"

    def _on_push(self, push: list[Any]) -> object:
        keys = push[1] if len(push) > 1 else None
        self.invalidate(None if keys is None else [_text(key) for key in keys])
        return _PUSH

    # -- waiting for a key to change (fill waiters) -----------------------------------
    def watch(self, keys: Iterable[str]) -> threading.Event:
        event = threading.Event()
        with self._lock:
            for key in keys:
                self._watchers.setdefault(key, set()).add(event)
        return event

    def unwatch(self, keys: Iterable[str], event: threading.Event) -> None:
        with self._lock:
            for key in keys:
                waiting = self._watchers.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._watchers[key]

    def _wake(self, keys: list[str] | None) -> None:
        with self._lock:
            if keys is None:
                events = {e for waiting in self._watchers.values() for e in waiting}
            else:
                events = {e for key in keys for e in self._watchers.get(key, ())}
        for event in events:
            event.set()


def _size(copy: Copy) -> int:
    return max(1, copy.size)


def _parts(value: Any) -> Iterable[bytes | bytearray]:
    if isinstance(value, bytes | bytearray):
        return (value,)
    if isinstance(value, tuple | list):
        return [part for part in value if isinstance(part, bytes | bytearray)]
    return ()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
