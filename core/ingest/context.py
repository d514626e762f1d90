"""What the ingest's components share: settings, the exchange it serves, a clock, a way to
enqueue tasks, and a live status for the heartbeat.

Why ``enqueue`` is injected: the ingest lives in ``core`` and must not import Celery. The
command line (the composition root) passes a function that sends a task by name; tests pass
one that records or runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import task_names as names
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings

Enqueue = Callable[[str, Sequence[Any]], None]
"""Send the task ``name`` with positional ``args``; raise EnqueueFailed if the broker is
unreachable. Blocking: components call it through ``asyncio.to_thread``."""

PROCESS_WAVE_TASK = names.PROCESS_WAVE


class EnqueueFailed(RuntimeError):
    """The task could not be handed to the broker; the caller tries again later."""


@dataclass
class IngestStatus:
    """Counters and state, read by the heartbeat (and tests). Lives in memory only: losing
    it loses nothing, every fact it counts is in the database."""

    signal_connected: bool = False
    connects: int = 0
    disconnects: int = 0
    auth_refusals: int = 0
    frames: int = 0
    signals_stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    store_retries: int = 0
    waves_dispatched: int = 0
    last_frame_at: datetime | None = None
    last_wait: float | None = None  # the last reconnect wait, seconds
    waits: list[float] = field(default_factory=list)  # recent reconnect waits (bounded)

    def note_wait(self, seconds: float) -> None:
        self.last_wait = seconds
        self.waits = [*self.waits[-49:], seconds]

    def snapshot(self) -> dict[str, Any]:
        return {
            "signal_connected": self.signal_connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "auth_refusals": self.auth_refusals,
            "frames": self.frames,
            "signals_stored": self.signals_stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "store_retries": self.store_retries,
            "waves_dispatched": self.waves_dispatched,
            "last_frame_at": self.last_frame_at.isoformat() if self.last_frame_at else None,
        }


@dataclass
class IngestContext:
    settings: Settings
    exchange: str  # the exchange whose waves this ingest dispatches (binance / bybit)
    enqueue: Enqueue
    clock: Clock = SYSTEM_CLOCK
    status: IngestStatus = field(default_factory=IngestStatus)
    # set by the signal client when a frame opened a wave of this exchange: the dispatcher
    # wakes up to learn the new deadline
    wave_created: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def component(self) -> str:
        """The heartbeat row's name."""
        return f"ingest:{self.exchange}"
