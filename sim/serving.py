"""What every simulated server (both exchange dialects, the signal source) does the same
way: run until SIGINT/SIGTERM, stop a background loop, and hold or drop an answer that a
fault says is lost after the request was executed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from sim.faults import FaultPlan


async def serve_until_signal(
    app: web.Application, host: str, port: int, *, name: str, url: str, logger: logging.Logger
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, saying on ``logger`` when ``name`` is up at
    ``url`` and when it goes down."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    logger.info("%s listening on %s", name, url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("%s shutting down", name)
        await runner.cleanup()


async def cancel(task: asyncio.Task[Any]) -> None:
    """Stop a background loop and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def hold_or_drop(request: web.Request, plan: FaultPlan) -> None:
    """Timeout after accept: the request was executed, the answer never arrives. ``drop``
    cuts the connection (and raises); otherwise the answer is held for ``hold_ms`` and the
    caller then answers with its venue's "unknown" error."""
    rule = plan.timeout
    assert rule is not None
    if rule.mode == "drop":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    await asyncio.sleep(rule.hold_ms / 1000)
