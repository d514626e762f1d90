"""Which objects of a running worker hold which Redis connections (diagnostics for the tests).

A thread in the worker's main process answers a request file (``<path>.request``) by writing
``<path>`` (JSON): every redis-py connection alive in the process with a socket, the state of
that socket as the kernel sees it (ESTABLISHED, CLOSE_WAIT...), and the chain of objects that
own its pool (a kombu channel, Celery's result backend...). How a leak is found: the owner
whose count grows with every broker loss.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from redis.connection import AbstractConnection, ConnectionPool


def _socket_states() -> dict[int, str]:
    return {c.fd: c.status for c in psutil.Process().net_connections(kind="tcp") if c.fd >= 0}


def _owner_of(pool: ConnectionPool) -> str:
    """The first objects (by type) that hold ``pool`` in an attribute."""
    names = []
    for holder in gc.get_referrers(pool):
        if isinstance(holder, dict):
            for owner in gc.get_referrers(holder):
                if getattr(owner, "__dict__", None) is holder:
                    attr = next((k for k, v in holder.items() if v is pool), "?")
                    state = ""
                    if hasattr(owner, "closed"):
                        state = " closed" if owner.closed else " open"
                    names.append(f"{type(owner).__qualname__}.{attr}{state}")
    return ",".join(sorted(set(names))) or "unreferenced"


def census() -> dict[str, Any]:
    garbage = gc.collect()
    states = _socket_states()
    pools: dict[int, ConnectionPool] = {}
    for obj in gc.get_objects():
        if isinstance(obj, ConnectionPool):
            pools[id(obj)] = obj
    rows: Counter[str] = Counter()
    pooled = 0
    for pool in pools.values():
        connections = [*pool._available_connections, *pool._in_use_connections]  # noqa: SLF001
        for connection in connections:
            sock = getattr(connection, "_sock", None)
            if sock is None:
                continue
            pooled += 1
            rows[f"{_owner_of(pool)} {states.get(sock.fileno(), '?')}"] += 1
    loose = 0
    for obj in gc.get_objects():
        if isinstance(obj, AbstractConnection) and getattr(obj, "_sock", None) is not None:
            loose += 1
    return {
        "pools": len(pools),
        "collected": garbage,
        "sockets_by_owner": dict(rows),
        "connections_with_socket": loose,
        "pooled_with_socket": pooled,
        "socket_states": dict(Counter(states.values())),
        "channels": channel_census(),
    }


def start_census_thread(path: Path) -> None:
    request = path.with_suffix(path.suffix + ".request")

    def answer() -> None:
        while True:
            if request.exists():
                request.unlink()
                path.write_text(json.dumps(census(), indent=1))
            time.sleep(0.2)

    threading.Thread(target=answer, name="redis-census", daemon=True).start()


def _holders(obj: object, depth: int) -> list[str]:
    """Type names of the objects that hold ``obj`` (through their ``__dict__``, a list, a set
    or a dict), ``depth`` levels up."""
    if depth == 0:
        return []
    found = []
    for ref in gc.get_referrers(obj):
        if isinstance(ref, dict):
            for owner in gc.get_referrers(ref):
                if getattr(owner, "__dict__", None) is ref:
                    attr = next((k for k, v in ref.items() if v is obj), "?")
                    up = _holders(owner, depth - 1)
                    found.append(
                        f"{type(owner).__qualname__}.{attr}" + (f"<{'|'.join(up)}" if up else "")
                    )
        elif isinstance(ref, (list, set)) and depth > 1:
            for owner in gc.get_referrers(ref):
                d = getattr(owner, "__dict__", None)
                if isinstance(d, dict):
                    continue
                if isinstance(owner, dict):
                    for holder in gc.get_referrers(owner):
                        if getattr(holder, "__dict__", None) is owner:
                            attr = next((k for k, v in owner.items() if v is ref), "?")
                            found.append(f"{type(holder).__qualname__}.{attr}[]")
    return sorted(set(found))


def channel_census() -> list[dict[str, Any]]:
    from kombu.transport.redis import Channel

    states = _socket_states()
    rows = []
    for obj in gc.get_objects():
        if not isinstance(obj, Channel):
            continue
        sockets = []
        for attr in ("_pool", "_async_pool"):
            pool = obj.__dict__.get(attr)
            if pool is None:
                continue
            for connection in [*pool._available_connections, *pool._in_use_connections]:  # noqa: SLF001
                sock = getattr(connection, "_sock", None)
                if sock is not None:
                    sockets.append(f"{attr}:{states.get(sock.fileno(), '?')}")
        rows.append(
            {
                "closed": obj.closed,
                "detached": obj.connection is None or obj.connection.client is None,
                "sockets": sockets,
                "held_by": _holders(obj, 2),
                "queues": sorted(obj._active_queues),  # noqa: SLF001
                "fanout": sorted(obj._fanout_queues),  # noqa: SLF001
                "id": obj.channel_id,
            }
        )
    return rows
