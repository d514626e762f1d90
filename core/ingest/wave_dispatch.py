"""The ingest's wave dispatcher: enqueue ``process_wave`` the moment a wave is due.

It sleeps until the earliest open wave's deadline (woken early when the signal client opens
a new wave), asks the database which waves are due, and enqueues each. The database is the
only source: a restarted ingest dispatches what its predecessor left, and a wave enqueued
twice (here and by beat's ``dispatch_due_waves`` fallback) is processed once, because the
worker claims it with a conditional UPDATE. A wave still open some time after it was
enqueued (no worker took it yet) is enqueued again.

It also notices windows that closed without a single signal (``WAVE_NOT_FOUND``): a silent
signal service looks exactly like a quiet market otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from core.events import EventType, record_alone
from core.ingest.backoff import Backoff
from core.ingest.context import PROCESS_WAVE_TASK, EnqueueFailed, IngestContext
from core.services import waves
from core.transient import DATABASE_DOWN

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POLL_CEILING = 5.0  # seconds between looks at the database when nothing is due sooner
REDISPATCH_AFTER = 30.0  # an enqueued wave still open this long later is enqueued again
MAX_EMPTY_WINDOWS = 8  # after a long pause, report at most this many silent windows
# the database or the broker gone for a moment: the next look is backed off
_TRY_AGAIN: tuple[type[BaseException], ...] = (*DATABASE_DOWN, EnqueueFailed)


def window_start(moment: datetime, window: timedelta) -> datetime:
    """Start of the wave window containing ``moment`` (windows are aligned to the epoch)."""
    step = window // timedelta(microseconds=1)
    offset = (moment - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=(offset // step) * step)


class WaveDispatcher:
    def __init__(self, ctx: IngestContext) -> None:
        self.ctx = ctx
        self.window = timedelta(seconds=ctx.settings.wave_interval)
        self.grace = timedelta(seconds=ctx.settings.wave_grace)
        self._enqueued: dict[int, float] = {}  # wave id -> monotonic time of the last enqueue
        self._next_window: datetime | None = None  # first window not yet checked for signals
        self._retry = Backoff(0.5, POLL_CEILING)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self._next_window is None:
                    await asyncio.to_thread(self._started)
                wait = await self.tick()
                self._retry.reset()
                self.ctx.status.loops.touch("waves")
            except _TRY_AGAIN as exc:
                wait = self._retry.next()
                log.error("wave dispatcher: %s; retrying in %.1fs", str(exc).splitlines()[0], wait)
            self.ctx.wave_created.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._woken())}
            _, pending = await asyncio.wait(
                waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _woken(self) -> None:
        await self.ctx.wave_created.wait()

    async def tick(self) -> float:
        """Enqueue what is due; return how long to sleep before the next look."""
        now = self.ctx.clock.now()
        found = await asyncio.to_thread(waves.due_waves, self.ctx.exchange, now)
        for wave_id in found.due:
            last = self._enqueued.get(wave_id)
            if last is not None and time.monotonic() - last < REDISPATCH_AFTER:
                continue
            await asyncio.to_thread(self.ctx.enqueue, PROCESS_WAVE_TASK, [wave_id])
            self._enqueued[wave_id] = time.monotonic()
            self.ctx.status.waves_dispatched += 1
            log.info("wave %s due: process_wave enqueued", wave_id)
        due = set(found.due)
        self._enqueued = {k: v for k, v in self._enqueued.items() if k in due}
        await asyncio.to_thread(self._report_silent_windows, now)
        wait = POLL_CEILING
        wakes = [found.next_deadline]
        if self._next_window is not None:  # when the next window may be found silent
            wakes.append(self._next_window + self.window + self.grace)
        for moment in wakes:
            if moment is not None:
                wait = min(wait, max(0.0, (moment - now).total_seconds()))
        if found.due:  # enqueued ones are re-checked, not spun on
            wait = max(wait, 1.0)
        return wait

    def _started(self) -> None:
        now = self.ctx.clock.now()
        self._next_window = window_start(now, self.window)
        record_alone(
            EventType.WAVE_MONITORING_STARTED,
            exchange=self.ctx.exchange,
            component=self.ctx.component,
            wave_interval=self.ctx.settings.wave_interval,
            wave_grace=self.ctx.settings.wave_grace,
        )

    def _report_silent_windows(self, now: datetime) -> None:
        """WAVE_NOT_FOUND for each window (since this process started) that closed empty."""
        if self._next_window is None:
            return
        behind = (now - self.grace - self.window - self._next_window) // self.window
        if behind > MAX_EMPTY_WINDOWS:  # after a long pause: only the latest windows
            self._next_window += (behind - MAX_EMPTY_WINDOWS) * self.window
        reported = 0
        while self._next_window + self.window + self.grace <= now:
            start = self._next_window
            if reported < MAX_EMPTY_WINDOWS and not waves.wave_exists(self.ctx.exchange, start):
                waves.record_wave_not_found(self.ctx.exchange, start, start + self.window)
                reported += 1
            self._next_window = start + self.window
