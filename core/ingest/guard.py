"""Supervised loops: a long-running loop of the ingest can fail, but never end in silence.

Why: a loop that dies inside a living process is the worst failure there is; the process
looks healthy, its heartbeat is fresh, and the thing it was for (prices reaching the stops)
has stopped. So every long-running loop runs under ``supervise``: any exception, or a
return while the process is not stopping, is logged, recorded as a ``loop_restarted`` event
and answered by running the loop again after an exponential backoff (reset once the loop has
stayed up for ``HEALTHY_AFTER_SECONDS``). Only the process's stop ends it.

Each loop's activity (when it last did its job, how often it was restarted, its last error)
lives in a ``LoopBook``, which the heartbeat writes into its row, so /health and an operator
can tell a loop that runs from one that merely exists.

``inject_fault(name)`` raises ``InjectedFault`` inside the named loop (the ingest calls it on
SIGUSR1, the chaos harness uses it): the restart path is exercised in the real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.ingest.backoff import Backoff

log = logging.getLogger(__name__)

HEALTHY_AFTER_SECONDS = 60.0

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Report = Callable[[str, int, str], Awaitable[None]]


class InjectedFault(RuntimeError):
    """Raised inside a loop on request, to prove that its guard restarts it."""


@dataclass
class LoopActivity:
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    restarts: int = 0
    last_error: str | None = None
    last_restart_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "started_at": iso(self.started_at),
            "last_activity_at": iso(self.last_activity_at),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_restart_at": iso(self.last_restart_at),
        }


@dataclass
class LoopBook:
    """Every supervised loop's activity, and the faults asked for (one process, one book)."""

    loops: dict[str, LoopActivity] = field(default_factory=dict)
    _faults: dict[str, asyncio.Event] = field(default_factory=dict)

    def activity(self, name: str) -> LoopActivity:
        return self.loops.setdefault(name, LoopActivity())

    def touch(self, name: str) -> None:
        """The loop ``name`` just did its job (a tick received, a frame read, a row written)."""
        self.activity(name).last_activity_at = datetime.now(UTC)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: activity.as_dict() for name, activity in sorted(self.loops.items())}

    def fault_event(self, name: str) -> asyncio.Event:
        return self._faults.setdefault(name, asyncio.Event())

    def inject_fault(self, name: str) -> bool:
        """Make the running loop ``name`` fail; False if no such loop runs."""
        if name not in self.loops:
            return False
        self.fault_event(name).set()
        return True


async def supervise(
    name: str,
    loop: Loop,
    stop: asyncio.Event,
    *,
    book: LoopBook,
    backoff: Backoff,
    report: Report | None = None,
) -> None:
    """Run ``loop(stop)`` until ``stop`` is set, restarting it after any failure or return."""
    activity = book.activity(name)
    while not stop.is_set():
        activity.started_at = datetime.now(UTC)
        began = time.monotonic()
        error = await _run_once(name, loop, stop, book)
        if stop.is_set():
            return
        if time.monotonic() - began >= HEALTHY_AFTER_SECONDS:
            backoff.reset()
        activity.restarts += 1
        activity.last_error = error
        activity.last_restart_at = datetime.now(UTC)
        wait = backoff.next()
        log.error("loop %s stopped (%s); restart %d in %.1fs", name, error, activity.restarts, wait)
        if report is not None:
            try:
                await report(name, activity.restarts, error)
            except Exception:  # noqa: BLE001 - a report must never stop the guard
                log.exception("restart of loop %s not recorded", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


async def _run_once(name: str, loop: Loop, stop: asyncio.Event, book: LoopBook) -> str:
    """One life of the loop; returns why it ended (meaningless if ``stop`` is set)."""
    fault = book.fault_event(name)
    fault.clear()
    task = asyncio.create_task(loop(stop), name=name)
    faulted = asyncio.create_task(fault.wait(), name=f"{name}-fault")
    try:
        await asyncio.wait({task, faulted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        faulted.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if fault.is_set() and not stop.is_set():
        return f"{InjectedFault.__name__}: injected into {name}"
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    if error is None:
        return "ended without being stopped"
    if not stop.is_set():
        log.error("loop %s failed", name, exc_info=error)
    return f"{type(error).__name__}: {error}"[:500]
