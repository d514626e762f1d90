# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""The signal source: token check before upgrade, seeded waves, batches, bad frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from sim.signal_source import SignalSource
from tests.fixtures.sim import signal_source  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
FIELDS = {"type", "id", "symbol", "exchange", "action", "score_week", "score_month", "timestamp"}


async def receive(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return str(msg.data)


def test_wrong_or_missing_token_is_refused_before_upgrade(signal_source: Any) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(signal_source.ws_url, headers=headers)
                assert info.value.status == 401

    asyncio.run(run())


def test_waves_batches_and_bad_frames_on_demand(signal_source: Any) -> None:
    headers = {"Authorization": f"Bearer {signal_source.token}"}

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(signal_source.ws_url, headers=headers) as ws:
                wave = [json.loads(await receive(ws)) for _ in range(3)]  # interval 0.2 s
                for item in wave:
                    assert set(item) == FIELDS and item["type"] == "signal"
                    assert item["action"] in ("BUY", "SELL") and item["exchange"] == "binance"
                    assert 0 <= item["score_week"] <= 100
                    assert item["timestamp"].endswith("Z")
                await asyncio.to_thread(
                    signal_source.admin, "POST", "/_sim/config", {"paused": True}
                )
                await asyncio.to_thread(
                    signal_source.emit,
                    signals=[{"id": "fixed-1", "symbol": "ETHUSDT", "action": "SELL"}, {}],
                    batch=True,
                )
                await asyncio.to_thread(signal_source.emit, raw="{broken", duplicate=True)
                await asyncio.to_thread(signal_source.emit, oversized=100_000)
                frames: list[str] = []
                while not any(len(f) >= 100_000 for f in frames):  # the last one emitted
                    frames.append(await receive(ws))
                batch = next(json.loads(f) for f in frames if '"signals"' in f)
                assert batch["type"] == "signals" and len(batch["signals"]) == 2
                assert batch["signals"][0]["id"] == "fixed-1"
                assert "{broken" in frames
                assert frames.count("{broken") == 2  # duplicate resends the last frame
                assert any(len(f) >= 100_000 for f in frames)

    asyncio.run(run())
    sent = signal_source.sent()["sent"]
    assert "{broken" in [f["text"] for f in sent]


def test_scores_are_seeded() -> None:
    first = [s["score_week"] for s in SignalSource("t", 1, 5, seed=3).wave()]
    again = [s["score_week"] for s in SignalSource("t", 1, 5, seed=3).wave()]
    other = [s["score_week"] for s in SignalSource("t", 1, 5, seed=4).wave()]
    assert first == again and first != other
