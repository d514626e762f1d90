"""The ingest process (``vigil ingest``): one asyncio process per exchange.

It runs a few independent components side by side and stops them all on SIGTERM/SIGINT:

- ``signals``: the signal WebSocket (core/ingest/signal_client.py), when VIGIL_SIGNAL_URL
  is set;
- ``waves``: the wave dispatcher (core/ingest/wave_dispatch.py);
- ``heartbeat``: the ``heartbeats`` row ``ingest:<exchange>`` every VIGIL_HEARTBEAT_INTERVAL;
- ``prices``: the exchange's mark-price and user-data streams (core/ingest/prices.py),
  which queue price tasks when a tick leaves a position's band.

A component is just ``async def run(stop_event) -> None``; to add one, add it to
``components()``. Every component runs under a guard (core/ingest/guard.py): one that raises
or returns while the process lives is logged, recorded as ``loop_restarted`` and started
again with backoff, so nothing inside the ingest ends in silence; only SIGTERM/SIGINT stop
it. SIGUSR1 injects a fault into one loop (named in ``VIGIL_HOME/ingest-fault``, default
``mark_prices``) to prove exactly that. The ingest stores and enqueues; it never talks to the
exchange's order API and decides no trade.
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

from core.db.session import unit_of_work
from core.events import EventType, record_alone
from core.ingest.backoff import Backoff
from core.ingest.context import IngestContext
from core.ingest.guard import LoopBook, supervise
from core.ingest.prices import run_price_stream
from core.ingest.signal_client import SignalClient
from core.ingest.stream_events import report_restart
from core.ingest.wave_dispatch import WaveDispatcher
from core.services import heartbeat
from core.transient import DATABASE_DOWN

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
RESTART_FIRST_SECONDS = 0.5
RESTART_CEILING_SECONDS = 10.0
DEFAULT_FAULT_LOOP = "mark_prices"

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
        settings, enqueue, status = ctx.settings, ctx.enqueue, ctx.status
        found.append(
            Component(
                "prices",
                lambda stop: run_price_stream(settings, stop, enqueue=enqueue, status=status),
            )
        )
    return found


def heartbeat_period(ctx: IngestContext) -> float:
    """Often enough that /health sees a silent price feed within its bound."""
    return min(ctx.settings.heartbeat_interval, ctx.settings.price_feed_stale_seconds / 2)


async def run_heartbeat(ctx: IngestContext, stop: asyncio.Event) -> None:
    """Keep ``heartbeats['ingest:<exchange>']`` fresh, with the status as its info."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(_beat, ctx)
            ctx.status.loops.touch("heartbeat")
        except DATABASE_DOWN as exc:
            log.error("ingest heartbeat not written: %s", str(exc).splitlines()[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), heartbeat_period(ctx))


def _beat(ctx: IngestContext) -> None:
    with unit_of_work() as session:
        heartbeat.beat(
            session, ctx.component, ctx.clock.now(), pid=os.getpid(), **ctx.status.snapshot()
        )


async def run_components(
    parts: list[Component], stop: asyncio.Event, *, book: LoopBook | None = None
) -> int:
    """Run every component, each under its guard, until ``stop`` is set; 0 on a clean stop."""
    book = book or LoopBook()
    guarded = [
        asyncio.create_task(
            supervise(
                part.name,
                part.run,
                stop,
                book=book,
                backoff=Backoff(RESTART_FIRST_SECONDS, RESTART_CEILING_SECONDS),
                report=report_restart,
            ),
            name=f"guard-{part.name}",
        )
        for part in parts
    ]
    try:
        await stop.wait()
    finally:
        _, late = await asyncio.wait(guarded, timeout=STOP_GRACE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*guarded, return_exceptions=True)
    return 0


async def run_ingest(
    ctx: IngestContext, stop: asyncio.Event | None = None, *, price_stream: bool = True
) -> int:
    """The whole ingest, until ``stop`` (or a crash); returns the exit code."""
    stop = stop or asyncio.Event()
    parts = components(ctx, price_stream=price_stream)
    names = [part.name for part in parts]
    try:
        await asyncio.to_thread(_system_event, ctx, EventType.SYSTEM_STARTED, components=names)
    except DATABASE_DOWN as exc:  # the components wait for storage
        log.error("ingest start not recorded: %s", str(exc).splitlines()[0])
    log.info("ingest for %s running: %s", ctx.exchange, ", ".join(names))
    code = await run_components(parts, stop, book=ctx.status.loops)
    with contextlib.suppress(*DATABASE_DOWN):
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
        loop.add_signal_handler(signal.SIGUSR1, inject_requested_fault, ctx)
        return await run_ingest(ctx, stop)

    return asyncio.run(serve())


def inject_requested_fault(ctx: IngestContext) -> None:
    """SIGUSR1: fail the loop named in ``VIGIL_HOME/ingest-fault`` (default mark_prices)."""
    name = DEFAULT_FAULT_LOOP
    with contextlib.suppress(OSError):
        name = (ctx.settings.home_dir / "ingest-fault").read_text().strip() or name
    injected = ctx.status.loops.inject_fault(name)
    log.warning("fault injected into loop %s" if injected else "no loop %s to fault", name)


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
