# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""WebSocket streams: mark prices (raw, combined, SUBSCRIBE) and the user data stream,
through ccxt.pro and through a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.fixtures.sim import (  # noqa: F401 - fixtures
    _paper_session_exchange,
    paper_exchange,
    paper_exchange_factory,
    sim,
    sim_server,
)

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
TIMEOUT = 5.0


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


def test_raw_and_combined_mark_price_streams(sim: Any) -> None:
    sim.set_price("BTCUSDT", "61000")

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{sim.ws_url}/btcusdt@markPrice@1s") as ws:
                event = await next_json(ws)
                assert event["e"] == "markPriceUpdate"
                assert (event["s"], event["p"]) == ("BTCUSDT", "61000")
            url = f"{sim.url}/stream?streams=ethusdt@markPrice/!markPrice@arr"
            async with session.ws_connect(url) as ws:
                seen: set[str] = set()
                while len(seen) < 2:
                    frame = await next_json(ws)
                    seen.add(frame["stream"])
                    if frame["stream"] == "!markPrice@arr":
                        assert len(frame["data"]) >= 20
                    else:
                        assert frame["data"]["s"] == "ETHUSDT"

    asyncio.run(run())


def test_subscribe_unsubscribe_and_bad_commands(sim: Any) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(sim.ws_url) as ws:
                await ws.send_str("not json")
                assert "error" in await next_json(ws)
                await ws.send_json(
                    {"method": "SUBSCRIBE", "params": ["solusdt@markPrice"], "id": 3}
                )
                assert await next_json(ws) == {"result": None, "id": 3}
                event = await next_json(ws)
                assert event["s"] == "SOLUSDT"
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
                while (reply := await next_json(ws)).get("id") != 4:
                    pass
                assert reply["result"] == ["solusdt@markPrice"]

    asyncio.run(run())


def test_ccxt_pro_mark_prices(sim: Any, paper_exchange_factory: Any) -> None:
    sim.set_price("BTCUSDT", "60500")

    async def run() -> None:
        ex = paper_exchange_factory(pro=True)
        try:
            ticker = await asyncio.wait_for(ex.watch_mark_price(BTC), TIMEOUT)
            assert ticker["markPrice"] == 60500
            tickers = await asyncio.wait_for(ex.watch_mark_prices(), TIMEOUT)
            assert len(tickers) >= 20
            sim.set_price("BTCUSDT", "60600")
            for _ in range(20):
                ticker = await asyncio.wait_for(ex.watch_mark_price(BTC), TIMEOUT)
                if ticker["markPrice"] == 60600:
                    break
            assert ticker["markPrice"] == 60600
        finally:
            await ex.close()

    asyncio.run(run())


def test_ccxt_pro_user_stream_orders_positions_balance(
    sim: Any, paper_exchange_factory: Any
) -> None:
    async def run() -> None:
        ex = paper_exchange_factory(pro=True)
        try:
            watch = asyncio.ensure_future(ex.watch_orders(BTC))
            await asyncio.sleep(0.3)  # let the subscription connect (no event to poll)
            order = await ex.create_order(BTC, "market", "buy", 0.01)
            updates = await asyncio.wait_for(watch, TIMEOUT)
            assert order["id"] in [u["id"] for u in updates]

            positions = asyncio.ensure_future(ex.watch_positions([BTC]))
            balance = asyncio.ensure_future(ex.watch_balance())
            await asyncio.sleep(0.3)
            await ex.create_order(BTC, "market", "buy", 0.01)
            pos = await asyncio.wait_for(positions, TIMEOUT)
            while pos[0]["contracts"] != 0.02:  # the first answer may be the REST snapshot
                pos = await asyncio.wait_for(ex.watch_positions([BTC]), TIMEOUT)
            assert pos[0]["side"] == "long"
            bal = await asyncio.wait_for(balance, TIMEOUT)
            assert bal["USDT"]["total"] < 10000

            stop = await ex.create_order(
                BTC, "market", "sell", 0.02, params={"stopPrice": 59000, "reduceOnly": True}
            )
            seen: dict[str, str] = {}
            watch = asyncio.ensure_future(ex.watch_orders(BTC))
            sim.set_price("BTCUSDT", "58000")
            while seen.get(stop["id"]) != "closed":
                for update in await asyncio.wait_for(watch, TIMEOUT):
                    seen[update["id"]] = update["status"]
                watch = asyncio.ensure_future(ex.watch_orders(BTC))
            watch.cancel()
        finally:
            await ex.close()

    asyncio.run(run())


def test_raw_user_stream_events(sim: Any, paper_exchange: Any) -> None:
    key = paper_exchange.fapiPrivatePostListenKey()["listenKey"]

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{sim.ws_url}/{key}") as ws:
                await asyncio.sleep(0.2)
                await asyncio.to_thread(paper_exchange.create_order, BTC, "market", "buy", 0.01)
                kinds = []
                while "ACCOUNT_UPDATE" not in kinds:
                    kinds.append((await next_json(ws))["e"])
                assert kinds[0] == "ORDER_TRADE_UPDATE"
                await asyncio.to_thread(
                    paper_exchange.create_order,
                    BTC,
                    "market",
                    "sell",
                    0.01,
                    None,
                    {"stopPrice": 59000, "reduceOnly": True},
                )
                while (event := await next_json(ws))["e"] != "ALGO_UPDATE":
                    pass
                assert event["o"]["X"] == "NEW" and event["o"]["tp"] == "59000"

    asyncio.run(run())
    assert paper_exchange.fapiPrivatePutListenKey()["listenKey"]
    paper_exchange.fapiPrivateDeleteListenKey()
