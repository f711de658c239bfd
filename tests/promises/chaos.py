"""Network faults between one worker and Valkey, injected under redis-py.

Each worker's Redis pool creates its connections from the engine's own
connection class with :class:`ChaosConnection` mixed in front (the pool's
``connection_class``; the engine's tracking listener builds its own connection
from the same class and keyword arguments), whose socket is a
:class:`ChaosSocket` in front of the real one. The engine is not edited; it
sees an ordinary socket that is sometimes slow, silent or dead:

* **pauses** where operations interleave: a seeded random delay before a
  command is sent and after a reply is read (request connections), and a delay
  after the tracking connection read an invalidation, before the engine applies
  it (the listener thread then holds bytes the socket no longer shows);
* **slow replies**: every reply late by a fixed time, so that reads with a
  shorter socket timeout time out (a server that is only slow);
* **holds**, for the named tests: the next reply (or command) whose bytes
  contain a marker waits until the test releases it;
* **silence**: the tracking connection goes quiet (a dropped network path, no
  FIN): nothing it sends arrives, nothing arrives for it after that moment
  (what had already reached this host is still read), reads time out;
* **death**: the worker is killed as SIGKILL would: every socket it has is shut
  down, and every new one is refused.

Which connection is the tracking one is seen on the wire: the one that sent
``CLIENT TRACKING``.
"""

from __future__ import annotations

import errno
import random
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis

HOLD_SECONDS = 10.0  # a hold never outlives a test that forgot to release it


class Hold:
    """One interleaving point a test controls: reached, then released."""

    def __init__(self, marker: bytes, direction: str) -> None:
        self.marker = marker
        self.direction = direction  # "reply" (after a read) or "send" (before a send)
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def _wait(self) -> None:
        self.reached.set()
        self._released.wait(HOLD_SECONDS)


class NetworkFaults:
    """The network conditions of one worker (thread-safe; seeded)."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[ChaosSocket] = weakref.WeakSet()
        self._holds: list[Hold] = []
        self.dead = False
        self.delay_probability = 0.0  # per send and per read on request connections
        self.delay_max = 0.0  # seconds
        self.tracking_read_delay = 0.0  # seconds, after each read of the tracking connection
        self.reply_delay = 0.0  # seconds every reply on a request connection arrives late
        self.tracking_read_seen = threading.Event()  # a delayed tracking read got bytes
        self._stall_once = 0.0  # seconds, after the next read of the tracking connection

    # -- what the harness turns on ------------------------------------------------
    def jitter(self, probability: float, max_seconds: float) -> None:
        self.delay_probability, self.delay_max = probability, max_seconds

    def slow_replies(self, seconds: float) -> None:
        """Every reply on a request connection arrives ``seconds`` late (a busy
        server): a read with a shorter socket timeout times out."""
        self.reply_delay = seconds

    def delay_tracking_reads(self, seconds: float) -> None:
        self.tracking_read_seen.clear()
        self.tracking_read_delay = seconds

    def stall_next_tracking_read(self, seconds: float) -> None:
        """The next invalidation this worker's listener reads waits ``seconds``
        before it is applied (a listener thread descheduled at the worst moment)."""
        self._stall_once = seconds

    def _tracking_delay(self) -> float:
        with self._lock:
            once, self._stall_once = self._stall_once, 0.0
        return self.tracking_read_delay or once

    def hold_reply(self, marker: bytes) -> Hold:
        """Hold the next reply on a request connection that contains ``marker``."""
        return self._hold(marker, "reply")

    def hold_send(self, marker: bytes) -> Hold:
        """Hold the next command on a request connection that contains ``marker``."""
        return self._hold(marker, "send")

    def _hold(self, marker: bytes, direction: str) -> Hold:
        hold = Hold(marker, direction)
        with self._lock:
            self._holds.append(hold)
        return hold

    def silence_tracking(self) -> int:
        """The tracking connection goes silent; returns how many were silenced."""
        silenced = 0
        for sock in list(self._sockets):
            if sock.tracking and not sock.closed:
                sock.go_silent()
                silenced += 1
        return silenced

    def tracking_addresses(self) -> list[str]:
        """``ip:port`` of this worker's live tracking connections (for CLIENT KILL ADDR)."""
        return [s.address for s in list(self._sockets) if s.tracking and not s.closed]

    def kill(self) -> None:
        """SIGKILL: every socket closes, no new one opens."""
        self.dead = True
        for sock in list(self._sockets):
            sock.shut()

    def heal(self) -> None:
        """End the pauses (a dead worker stays dead; a silent socket stays silent
        until the engine replaces it)."""
        self.jitter(0.0, 0.0)
        self.slow_replies(0.0)
        self.delay_tracking_reads(0.0)
        self.stall_next_tracking_read(0.0)
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    # -- used by the sockets ------------------------------------------------------
    def _register(self, sock: ChaosSocket) -> None:
        self._sockets.add(sock)

    def _random_delay(self) -> float:
        if self.delay_probability <= 0:
            return 0.0
        with self._lock:
            if self._rng.random() >= self.delay_probability:
                return 0.0
            return self._rng.uniform(0.0, self.delay_max)

    def _take_hold(self, data: bytes, direction: str) -> Hold | None:
        if not self._holds:
            return None
        with self._lock:
            for hold in self._holds:
                if hold.direction == direction and hold.marker in data:
                    self._holds.remove(hold)
                    return hold
        return None


def _killed() -> OSError:
    return ConnectionResetError(errno.ECONNRESET, "connection reset (worker killed)")


class ChaosSocket:
    """A socket as redis-py uses it (``sendall``, ``recv``, timeouts, ``fileno``
    for select), with the faults of its worker in front of the real one."""

    def __init__(self, real: Any, faults: NetworkFaults) -> None:
        self._real = real
        self._faults = faults
        self.tracking = False
        self.silent = False
        self._received = b""  # reached this host before the path went silent
        self.closed = False
        host, port = real.getsockname()[:2]
        self.address = f"{host}:{port}"
        faults._register(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def fileno(self) -> int:
        return self._real.fileno()

    def go_silent(self) -> None:
        """The path drops everything from now on. Bytes already in this host's
        receive buffer were delivered before it died: they stay readable."""
        try:
            self._received += self._read_arrived()[0]
        except ValueError:  # the engine closed it meanwhile: nothing to keep
            pass
        self.silent = True

    def shut(self) -> None:
        try:
            self._real.shutdown(2)
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self._real.close()

    def sendall(self, data: Any, *flags: int) -> None:
        faults = self._faults
        if faults.dead:
            raise _killed()
        raw = bytes(data)
        if b"\r\nTRACKING\r\n" in raw.upper():
            self.tracking = True
        if self.silent:
            return None  # lost on the way
        if not self.tracking:
            hold = faults._take_hold(raw, "send")
            if hold is not None:
                hold._wait()
            delay = faults._random_delay()
            if delay:
                time.sleep(delay)  # the network's latency is what is simulated
        self._real.sendall(data, *flags)
        return None

    def recv(self, size: int, *flags: int) -> bytes:
        return self._after_read(lambda: self._real.recv(size, *flags), size)

    def recv_into(self, buffer: Any, nbytes: int = 0, *flags: int) -> int:
        size = nbytes or len(buffer)
        data = self._after_read(lambda: self._real.recv(size, *flags), size)
        buffer[: len(data)] = data
        return len(data)

    def _after_read(self, read: Callable[[], bytes], size: int) -> bytes:
        faults = self._faults
        if faults.dead:
            raise _killed()
        if self.silent:
            if self._received:
                data, self._received = self._received[:size], self._received[size:]
                return data
            return self._swallow()
        data = read()
        if faults.dead:
            raise _killed()
        if not data:
            return data
        if self.tracking:
            delay = faults._tracking_delay()
            if delay:
                faults.tracking_read_seen.set()
                time.sleep(delay)  # the listener holds these bytes, not yet applied
            return data
        hold = faults._take_hold(data, "reply")
        if hold is not None:
            hold._wait()
        late, timeout = faults.reply_delay, self._real.gettimeout()
        if late and timeout != 0:
            if timeout is not None and timeout < late:
                time.sleep(timeout)  # the reply is still on its way when the read gives up
                raise TimeoutError("timed out (slow reply)")
            time.sleep(late)
        delay = faults._random_delay()
        if delay:
            time.sleep(delay)
        return data

    def _swallow(self) -> bytes:
        """A silent connection: whatever arrives is lost; reads wait out their timeout."""
        timeout = self._real.gettimeout()
        if timeout == 0:
            self._discard()
            raise BlockingIOError(errno.EAGAIN, "no data (silent connection)")
        deadline = time.monotonic() + (HOLD_SECONDS if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out (silent connection)")
            if select.select([self._real], [], [], remaining)[0] and not self._discard():
                time.sleep(max(0.0, deadline - time.monotonic()))  # closed: nothing comes

    def _discard(self) -> bool:
        """Read and drop what has arrived; False if the peer closed."""
        return self._read_arrived()[1]

    def _read_arrived(self) -> tuple[bytes, bool]:
        """What has arrived on the real socket, without waiting; and False if
        the peer closed (or the socket failed)."""
        received = []
        open_ = True
        while select.select([self._real], [], [], 0)[0]:
            try:
                chunk = self._real.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                open_ = False
                break
            if not chunk:
                open_ = False
                break
            received.append(chunk)
        return b"".join(received), open_


class ChaosConnection:
    """Mixed in front of the engine's own connection class: its socket is a
    :class:`ChaosSocket` (``faults`` comes through the pool's connection keyword
    arguments)."""

    def __init__(self, *args: Any, faults: NetworkFaults | None = None, **kwargs: Any) -> None:
        self.faults = faults
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        if self.faults is not None and self.faults.dead:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (worker killed)")
        sock = super()._connect()  # type: ignore[misc]
        return sock if self.faults is None else ChaosSocket(sock, self.faults)


def install(client: redis.Redis, faults: NetworkFaults) -> redis.Redis:
    """Make every connection ``client``'s pool opens from now on a chaos one,
    keeping the engine's own connection class (and whatever it adds) underneath."""
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Chaos{base.__name__}", (ChaosConnection, base), {})
    pool.connection_kwargs = {**pool.connection_kwargs, "faults": faults}
    return client
