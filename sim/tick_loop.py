"""The simulator's clock: every ``tick_interval`` prices move, triggers fire, the streams
get the new marks and the durable account is saved. Shared by both dialects' servers, so it
stands below them (neither server imports the other for it)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sim.admin import HUB_KEY, STATE_KEY
from sim.persist import save_quietly
from sim.serving import cancel

TICK_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("sim_tick", asyncio.Task)


async def _tick_loop(app: web.Application) -> None:
    state = app[STATE_KEY]
    hub = app[HUB_KEY]
    loop = asyncio.get_running_loop()
    interval = state.options.tick_interval
    next_at = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at += interval
        if next_at < loop.time():  # fell behind (overloaded): skip, don't burst
            next_at = loop.time() + interval
        state.tick()
        hub.publish_marks(state.prices.prices)
        save_quietly(app, state)


async def _on_startup(app: web.Application) -> None:
    app[STATE_KEY].loop = asyncio.get_running_loop()
    app[TICK_TASK_KEY] = asyncio.create_task(_tick_loop(app))


async def _on_shutdown(app: web.Application) -> None:
    await cancel(app[TICK_TASK_KEY])
    await app[HUB_KEY].close_all()


def add_tick_loop(app: web.Application) -> None:
    """Move prices every `tick_interval` and push them to the streams (both dialects)."""
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
