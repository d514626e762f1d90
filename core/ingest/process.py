"""The ingest process (``vigil ingest``): one asyncio process per exchange.

It runs a few independent components side by side and stops them all on SIGTERM/SIGINT:

- ``signals``: the signal WebSocket (core/ingest/signal_client.py), when VIGIL_SIGNAL_URL
  is set;
- ``waves``: the wave dispatcher (core/ingest/wave_dispatch.py);
- ``heartbeat``: the ``heartbeats`` row ``ingest:<exchange>`` every VIGIL_HEARTBEAT_INTERVAL;
- ``prices``: the exchange's mark-price and user-data streams (core/ingest/prices.py),
  which queue price tasks when a tick leaves a position's band.

A component is just ``async def run(stop_event) -> None``; to add one, add it to
``components()``. A component that returns ends quietly; one that raises stops the whole
process with a non-zero exit, so the supervisor (``vigil up``, Docker) sees it. The ingest
stores and enqueues; it never talks to the exchange's order API and decides no trade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from core.db.session import unit_of_work
from core.events import EventType, Severity, record_alone
from core.ingest.context import IngestContext
from core.ingest.prices import run_price_stream
from core.ingest.signal_client import SignalClient
from core.ingest.wave_dispatch import WaveDispatcher
from core.services import heartbeat

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0

Run = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Component:
    name: str
    run: Run


def components(ctx: IngestContext, *, price_stream: bool = True) -> list[Component]:
    """What this ingest runs, in start order (``price_stream=False``: without prices)."""
    found: list[Component] = []
    if ctx.settings.signal_url:
        found.append(Component("signals", SignalClient(ctx).run))
    else:
        log.warning("VIGIL_SIGNAL_URL is not set: no signal socket in this ingest")
    found.append(Component("waves", WaveDispatcher(ctx).run))
    found.append(Component("heartbeat", lambda stop: run_heartbeat(ctx, stop)))
    if price_stream:
        settings, enqueue = ctx.settings, ctx.enqueue
        found.append(
            Component("prices", lambda stop: run_price_stream(settings, stop, enqueue=enqueue))
        )
    return found


async def run_heartbeat(ctx: IngestContext, stop: asyncio.Event) -> None:
    """Keep ``heartbeats['ingest:<exchange>']`` fresh, with the status as its info."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(_beat, ctx)
        except (OperationalError, InterfaceError) as exc:
            log.error("ingest heartbeat not written: %s", str(exc).splitlines()[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ctx.settings.heartbeat_interval)


def _beat(ctx: IngestContext) -> None:
    with unit_of_work() as session:
        heartbeat.beat(
            session, ctx.component, ctx.clock.now(), pid=os.getpid(), **ctx.status.snapshot()
        )


async def run_components(parts: list[Component], stop: asyncio.Event) -> int:
    """Run every component until ``stop`` is set or one crashes; 0 on a clean stop."""
    tasks: dict[asyncio.Task[None], Component] = {
        asyncio.create_task(part.run(stop), name=part.name): part for part in parts
    }
    stopping = asyncio.ensure_future(stop.wait())
    running = set(tasks)
    code = 0
    while running and not stop.is_set():
        done, _ = await asyncio.wait({*running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done & running:
            running.discard(task)
            error = task.exception()
            if error is not None:
                log.error("ingest component %s failed", task.get_name(), exc_info=error)
                await _record_crash(task.get_name(), error)
                code = 1
                stop.set()
            elif not stop.is_set():
                log.info("ingest component %s finished", task.get_name())
    stop.set()
    stopping.cancel()
    if running:
        _, late = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    return code


async def _record_crash(name: str, error: BaseException) -> None:
    def write() -> None:
        record_alone(
            EventType.CRITICAL_ERROR,
            severity=Severity.CRITICAL,
            component=f"ingest/{name}",
            error=f"{type(error).__name__}: {error}"[:500],
        )

    try:
        await asyncio.to_thread(write)
    except (OperationalError, InterfaceError):
        log.exception("could not record the crash of %s", name)


async def run_ingest(
    ctx: IngestContext, stop: asyncio.Event | None = None, *, price_stream: bool = True
) -> int:
    """The whole ingest, until ``stop`` (or a crash); returns the exit code."""
    stop = stop or asyncio.Event()
    parts = components(ctx, price_stream=price_stream)
    names = [part.name for part in parts]
    try:
        await asyncio.to_thread(_system_event, ctx, EventType.SYSTEM_STARTED, components=names)
    except (OperationalError, InterfaceError) as exc:  # the components wait for storage
        log.error("ingest start not recorded: %s", str(exc).splitlines()[0])
    log.info("ingest for %s running: %s", ctx.exchange, ", ".join(names))
    code = await run_components(parts, stop)
    with contextlib.suppress(OperationalError, InterfaceError):
        await asyncio.to_thread(_system_event, ctx, EventType.SYSTEM_STOPPED, exit_code=code)
    return code


def _system_event(ctx: IngestContext, event_type: EventType, **data: Any) -> None:
    record_alone(
        event_type,
        exchange=ctx.exchange,
        component=ctx.component,
        pid=os.getpid(),
        **data,
    )


def main(ctx: IngestContext) -> int:
    """Run the ingest in this process until SIGTERM/SIGINT; returns the exit code."""

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_ingest(ctx, stop)

    return asyncio.run(serve())


class BackgroundIngest:
    """The ingest on its own event loop in a thread (tests, demos, benchmarks)."""

    def __init__(self, ctx: IngestContext, *, price_stream: bool = True) -> None:
        self.ctx = ctx
        self.price_stream = price_stream
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def start(self) -> BackgroundIngest:
        self._thread.start()
        self._started.wait(10)
        return self

    def _run(self) -> None:
        async def serve() -> int:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            return await run_ingest(self.ctx, self._stop, price_stream=self.price_stream)

        self.exit_code = asyncio.run(serve())

    def stop(self, timeout: float = 15.0) -> int | None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        return self.exit_code

    def __enter__(self) -> BackgroundIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
