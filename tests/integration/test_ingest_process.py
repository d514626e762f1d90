"""The ingest process: components run side by side, a crash stops them all with a non-zero
exit and a critical event, a clean stop is 0, and the price stream plugs in when present."""

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


def idle(stopped: list[str], name: str) -> Component:
    async def run(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            stopped.append(name)

    return Component(name, run)


def test_a_crashing_component_stops_the_others_and_exits_non_zero(clean_db):
    stopped: list[str] = []

    async def crash(stop: asyncio.Event) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    async def main() -> int:
        return await run_components(
            [idle(stopped, "a"), Component("bad", crash), idle(stopped, "b")], asyncio.Event()
        )

    assert asyncio.run(main()) == 1
    assert sorted(stopped) == ["a", "b"]
    with unit_of_work() as s:
        [event] = s.scalars(select(Event).where(Event.type == "critical_error")).all()
    assert event.severity == "critical" and event.data["component"] == "ingest/bad"
    assert "boom" in event.data["error"]


def test_a_finished_component_leaves_the_others_running_until_stop(clean_db):
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


def test_the_price_stream_runs_with_the_ingests_own_task_sender(clean_db, monkeypatch):
    """The price stream queues through the ingest's ``enqueue`` (no Celery import in core)."""
    sent: list[tuple[str, list[object]]] = []
    ctx = IngestContext(
        load_settings(signal_url=None), "binance", lambda name, args: sent.append((name, args))
    )
    seen: dict[str, object] = {}

    async def fake_stream(settings, stop_event, enqueue=None) -> None:
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
