"""Worker CPU for the tick-to-order benchmark: what a stop move and a sweep cost the workers.

Latency on a loaded 2-core machine moves 2-3x with the neighbours' load; CPU time spent by
the ``stops`` worker's processes does much less, so it is the figure a change to the price
path is judged by. A worker node is a process tree (the main process and its pool
children); its CPU is the sum over the tree, read through psutil (``/proc/<pid>/stat``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil
import redis
from common import wait_until
from sqlalchemy import func, select, update

from core import task_names
from core.db.models import Event, Position, TrailingStop
from core.db.session import unit_of_work


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and every live descendant."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` alone (a worker's main process)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def idle_rate(pid: int, seconds: float) -> float:
    """CPU seconds per second the worker tree spends with nothing queued."""
    before = tree_cpu(pid)
    time.sleep(seconds)
    return (tree_cpu(pid) - before) / seconds


def moves_since(at: datetime) -> int:
    """Stop moves (``trailing_stop_updated`` events) recorded since ``at``."""
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.type == "trailing_stop_updated", Event.created_at >= at)
            )
            or 0
        )


@dataclass(frozen=True)
class SweepCost:
    positions: int
    cpu_s: float
    wall_s: float

    @property
    def ms_per_position(self) -> float:
        return self.cpu_s * 1000 / max(1, self.positions)


def measure_sweep(send: object, client: redis.Redis, worker_pid: int, ids: list[int]) -> SweepCost:
    """One ``vigil.stops.trailing_sweep`` over ``ids`` when nothing changes: every heartbeat
    made stale first (so every position is due, as after a quiet sweep interval), then the
    worker's CPU from the send until every heartbeat is fresh again and the queue is empty."""
    stale = datetime.now(UTC) - timedelta(days=1)
    with unit_of_work() as s:
        ids = list(
            s.scalars(select(Position.id).where(Position.id.in_(ids), Position.status == "active"))
        )
        s.execute(
            update(TrailingStop).where(TrailingStop.position_id.in_(ids)).values(heartbeat_at=stale)
        )
    marked = datetime.now(UTC)
    cpu0, t0 = tree_cpu(worker_pid), time.monotonic()
    send(task_names.TRAILING_SWEEP, ())  # type: ignore[operator]

    def fresh() -> bool:
        with unit_of_work() as s:
            count = s.scalar(
                select(func.count())
                .select_from(TrailingStop)
                .where(TrailingStop.position_id.in_(ids), TrailingStop.heartbeat_at >= marked)
            )
        return count == len(ids) and client.llen("stops") == 0

    wait_until(fresh, 600, "the sweep's heartbeats", 0.05)
    wall = time.monotonic() - t0
    time.sleep(0.5)  # the last task's result and acknowledgement
    return SweepCost(len(ids), tree_cpu(worker_pid) - cpu0, wall)
