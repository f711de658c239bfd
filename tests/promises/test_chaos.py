"""The fault harness itself (tests/promises/chaos.py) is faithful to the network it
simulates: a fault it injects must not do what a real one cannot, or the checker
reports violations the engine never commits.

Found by the long checker (seed 2598929266, schedule 18): the silence of a
tracking connection threw away invalidations already in the worker's receive
buffer, and the checker then blamed the engine for a stale copy.
"""

from __future__ import annotations

import select
import socket

import pytest

from .chaos import ChaosSocket, NetworkFaults

pytestmark = pytest.mark.unit


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    return ours, theirs


def test_a_silent_path_delivers_what_had_arrived_and_loses_what_comes_after():
    ours, theirs = tcp_pair()
    try:
        chaotic = ChaosSocket(ours, NetworkFaults("w0"))
        chaotic.tracking = True
        theirs.sendall(b"before")
        select.select([ours], [], [], 5)  # it reached this host
        chaotic.go_silent()
        theirs.sendall(b"after")
        chaotic.settimeout(0.05)
        assert chaotic.recv(3) == b"bef"
        assert chaotic.recv(64) == b"ore"
        with pytest.raises(TimeoutError):
            chaotic.recv(64)  # "after" never arrives
    finally:
        ours.close()
        theirs.close()
