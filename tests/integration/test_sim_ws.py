# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""WebSocket streams: mark prices (raw, combined, SUBSCRIBE) and the user data stream,
through ccxt.pro and through a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
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
DEADLINE = 30.0  # generous: only reached when the stream is really broken
POLL = 0.5


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


async def user_stream_ready(sim: Any, ex: Any, deadline: float = DEADLINE) -> None:
    """Until the simulator holds `ex`'s user-data connection and ccxt's position snapshot
    (a REST read that replaces the position cache when it lands) has loaded."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        key = ex.options.get("linear", {}).get("listenKey")
        stats = await asyncio.to_thread(sim.admin, "GET", "/_sim/ws")
        connected = key is not None and any(c["listen_key"] == key for c in stats["connections"])
        if connected and (ex.positions or {}).get("linear") is not None:
            return
        assert loop.time() < end, "the user stream did not connect"
        await asyncio.sleep(0.05)


async def watch_until(
    watch: Callable[[], Awaitable[Any]],
    reached: Callable[[], bool],
    pending: asyncio.Future[Any] | None = None,
    deadline: float = DEADLINE,
) -> None:
    """Keep a ccxt.pro `watch_*` call waiting (`pending`: one subscribed before the action)
    until `reached()`, read from ccxt's stream caches, holds. A watch call only wakes for a
    message that arrives after it registered: one of an action's messages landing between
    two calls (they spread out under load) is in the cache but wakes nobody, so the
    condition is re-checked on every message and at least every POLL seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    try:
        while not reached():
            assert loop.time() < end, "the stream never reached the expected state"
            pending = pending or asyncio.ensure_future(watch())
            done, _ = await asyncio.wait({pending}, timeout=POLL)
            if done:
                pending.result()  # surface a stream error
                pending = None
    finally:
        if pending is not None:
            pending.cancel()


def test_ccxt_pro_user_stream_orders_positions_balance(
    sim: Any, paper_exchange_factory: Any
) -> None:
    async def run() -> None:
        ex = paper_exchange_factory(pro=True)

        def has_order(order_id: str, status: str | None = None) -> bool:
            found = next((o for o in ex.orders or [] if o["id"] == order_id), None)
            return found is not None and status in (None, found["status"])

        def long_position(contracts: float) -> bool:
            cache = (ex.positions or {}).get("linear") or []
            found = [p for p in cache if p["symbol"] == BTC and p["contracts"] == contracts]
            return bool(found) and found[0]["side"] == "long"

        def fees_paid() -> bool:
            total = ((ex.balance or {}).get("linear") or {}).get("USDT", {}).get("total")
            return total is not None and total < 10000

        try:
            watch = asyncio.ensure_future(ex.watch_orders(BTC))
            await user_stream_ready(sim, ex)  # events before this would never reach ccxt
            order = await ex.create_order(BTC, "market", "buy", 0.01)
            await watch_until(lambda: ex.watch_orders(BTC), lambda: has_order(order["id"]), watch)

            positions = asyncio.ensure_future(ex.watch_positions([BTC]))
            balance = asyncio.ensure_future(ex.watch_balance())
            await ex.create_order(BTC, "market", "buy", 0.01)
            await watch_until(
                lambda: ex.watch_positions([BTC]), lambda: long_position(0.02), positions
            )
            await watch_until(ex.watch_balance, fees_paid, balance)

            stop = await ex.create_order(
                BTC, "market", "sell", 0.02, params={"stopPrice": 59000, "reduceOnly": True}
            )
            watch = asyncio.ensure_future(ex.watch_orders(BTC))
            await asyncio.to_thread(sim.set_price, "BTCUSDT", "58000")
            await watch_until(
                lambda: ex.watch_orders(BTC), lambda: has_order(stop["id"], "closed"), watch
            )
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
