"""Moving a cluster's slots between primaries, fast and under load, and counting
the redirections (MOVED, ASK, TRYAGAIN) the nodes answered while they moved.

The drills use it to reshard (slots fully moved: clients see MOVED) and to hold
slots half-moved (MIGRATING: clients see ASK). ``stack`` is a cluster stack
(``primaries()`` and ``node_client(service)``); a node has ``id`` and
``service``.
"""

from __future__ import annotations

import threading
from typing import Any

PARALLEL = 8  # connections per node for the SETSLOT steps
CHUNK = 1024  # slots moved at a time (valkey-cli moves one at a time)


def reshard(stack: Any, source: Any, target: Any, slots: list[int]) -> int:
    """Move ``slots`` ``CHUNK`` at a time (see :func:`move_slots`); keys moved."""
    return sum(
        move_slots(stack, source, target, slots[start : start + CHUNK])
        for start in range(0, len(slots), CHUNK)
    )


def move_slots(stack: Any, source: Any, target: Any, slots: list[int], finish: bool = True) -> int:
    """Move ``slots`` from ``source`` to ``target`` (cluster nodes of ``stack``) with
    the protocol ``valkey-cli --cluster reshard`` follows -- IMPORTING on the
    target, MIGRATING on the source, MIGRATE every key, SETSLOT NODE on every
    primary -- each step pipelined over ``PARALLEL`` connections (and
    :func:`reshard` a chunk of slots at a time, so the cluster changes
    gradually, as valkey-cli changes it). Valkey (>= 8)
    replicates every SETSLOT to the node's replicas and answers once they
    acknowledged it, so one slot at a time costs a replication round trip per
    step: valkey-cli took 10 min 49 s for 5,461 slots on this 2-core machine
    under load. With ``finish=False`` the slots stay MIGRATING with their keys
    moved: a client asking the source for them gets ASK. Returns the keys moved."""
    primaries = stack.primaries()
    _parallel(stack, target, [("CLUSTER", "SETSLOT", s, "IMPORTING", source.id) for s in slots])
    _parallel(stack, source, [("CLUSTER", "SETSLOT", s, "MIGRATING", target.id) for s in slots])
    moved = 0
    src = stack.node_client(source.service)
    try:
        while True:  # a MIGRATING source creates no key: this ends
            found = _pipelined(src, [("CLUSTER", "GETKEYSINSLOT", s, 1000) for s in slots])
            if not any(found):
                break
            for keys in found:  # one MIGRATE per slot: a command may not span slots
                for start in range(0, len(keys), 100):
                    chunk = keys[start : start + 100]
                    src.execute_command(
                        "MIGRATE", target.service, 6379, "", 0, 5000, "REPLACE", "KEYS", *chunk
                    )
                    moved += len(chunk)
    finally:
        src.close()
    if finish:
        finish_move(stack, slots, source, target, primaries)
    return moved


def finish_move(
    stack: Any, slots: list[int], source: Any, target: Any, primaries: Any = None
) -> None:
    """SETSLOT NODE on the target, the source, then every other primary."""
    primaries = primaries or stack.primaries()
    order = [target, source] + [p for p in primaries if p.id not in (source.id, target.id)]
    for node in order:
        _parallel(stack, node, [("CLUSTER", "SETSLOT", s, "NODE", target.id) for s in slots])


def _parallel(stack: Any, node: Any, commands: list[tuple[Any, ...]]) -> None:
    """``commands`` on ``node``, spread over ``PARALLEL`` pipelined connections."""
    errors: list[BaseException] = []

    def one(part: list[tuple[Any, ...]]) -> None:
        client = stack.node_client(node.service)
        try:
            _pipelined(client, part)
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)
        finally:
            client.close()

    threads = [
        threading.Thread(target=one, args=(commands[n::PARALLEL],))
        for n in range(PARALLEL)
        if commands[n::PARALLEL]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    if errors:
        raise errors[0]


def _pipelined(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


def error_count(stack: Any, service: str, kind: str) -> int:
    """Error replies of one kind (MOVED, ASK, TRYAGAIN) a node has sent (INFO errorstats)."""
    client = stack.node_client(service)
    try:
        stats = client.info("errorstats")
    finally:
        client.close()
    entry = stats.get(f"errorstat_{kind}", {})
    return int(entry.get("count", 0)) if isinstance(entry, dict) else 0
