"""The ingest process: components run side by side, each under a guard that restarts it after
a crash (with a ``loop_restarted`` event) while the others run on, a clean stop is 0, and
the price stream plugs in when present."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from core.config import load_settings
from core.db.models import Event
from core.db.session import unit_of_work
from core.ingest import process
from core.ingest.context import IngestContext
from core.ingest.process import Component, components, run_components

pytestmark = pytest.mark.integration


async def until(probe) -> None:
    """Poll ``probe`` on the event loop until it is true."""
    for _ in range(500):
        if probe():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def idle(stopped: list[str], name: str) -> Component:
    async def run(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            stopped.append(name)

    return Component(name, run)


def test_a_crashing_component_is_restarted_and_the_others_run_on(clean_db):
    stopped: list[str] = []
    lives: list[int] = []

    async def crash_twice(stop: asyncio.Event) -> None:
        lives.append(1)
        if len(lives) <= 2:
            raise RuntimeError("boom")
        await stop.wait()

    async def main() -> int:
        stop = asyncio.Event()
        runner = asyncio.create_task(
            run_components(
                [idle(stopped, "a"), Component("bad", crash_twice), idle(stopped, "b")], stop
            )
        )
        await until(lambda: len(lives) >= 3)
        assert stopped == [] and not runner.done()
        stop.set()
        return await runner

    assert asyncio.run(main()) == 0
    assert sorted(stopped) == ["a", "b"] and len(lives) == 3
    with unit_of_work() as s:
        events = s.scalars(select(Event).where(Event.type == "loop_restarted")).all()
    assert [e.data["restarts"] for e in events] == [1, 2]
    assert {e.data["component"] for e in events} == {"ingest/bad"}
    assert all("boom" in e.data["error"] for e in events)


def test_a_finished_component_is_restarted_and_the_others_run_until_stop(clean_db):
    stopped: list[str] = []

    async def done_early(stop: asyncio.Event) -> None:
        return None

    async def main() -> int:
        stop = asyncio.Event()
        runner = asyncio.create_task(
            run_components([Component("once", done_early), idle(stopped, "a")], stop)
        )
        await asyncio.sleep(0.05)
        assert not runner.done() and stopped == []
        stop.set()
        return await runner

    assert asyncio.run(main()) == 0
    assert stopped == ["a"]
    with unit_of_work() as s:
        [event] = s.scalars(select(Event).where(Event.type == "loop_restarted")).all()
    assert event.data["error"] == "ended without being stopped"  # restarted, not silent


def test_the_price_stream_runs_with_the_ingests_own_task_sender(clean_db, monkeypatch):
    """The price stream queues through the ingest's ``enqueue`` (no Celery import in core)."""
    sent: list[tuple[str, list[object]]] = []
    ctx = IngestContext(
        load_settings(signal_url=None), "binance", lambda name, args: sent.append((name, args))
    )
    seen: dict[str, object] = {}

    async def fake_stream(settings, stop_event, enqueue=None, status=None) -> None:
        seen["settings"] = settings
        enqueue("vigil.stops.on_price", ["binance", "BTCUSDT"])
        await stop_event.wait()

    monkeypatch.setattr(process, "run_price_stream", fake_stream)
    parts = components(ctx)
    assert [c.name for c in parts] == ["waves", "heartbeat", "prices"]
    assert [c.name for c in components(ctx, price_stream=False)] == ["waves", "heartbeat"]

    async def run_prices() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(parts[-1].run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run_prices())
    assert seen["settings"] is ctx.settings
    assert sent == [("vigil.stops.on_price", ["binance", "BTCUSDT"])]
