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


def test_the_price_stream_joins_when_its_module_exposes_it(clean_db, monkeypatch):
    ctx = IngestContext(load_settings(signal_url=None), "binance", lambda *_: None)
    monkeypatch.setattr(process, "PRICE_STREAM_MODULE", "core.ingest.no_such_module")
    assert [c.name for c in components(ctx)] == ["waves", "heartbeat"]
    monkeypatch.setattr(process, "PRICE_STREAM_MODULE", "core.ingest.backoff")  # no function
    assert [c.name for c in components(ctx)] == ["waves", "heartbeat"]
    monkeypatch.setattr(process, "PRICE_STREAM_MODULE", "tests.integration.test_ingest_process")
    assert [c.name for c in components(ctx)] == ["waves", "heartbeat", "prices"]
    assert [c.name for c in components(ctx, price_stream=False)] == ["waves", "heartbeat"]


async def run_price_stream(settings, stop_event) -> None:
    """Stands in for core.ingest.prices in the test above."""
    await stop_event.wait()
