"""Bybit v5 streams of the paper exchange: tickers with the mark price (the engine's price
path) and private order updates (how a fired stop is seen), through ccxt.pro `bybit` and a
plain aiohttp client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import ccxt
import pytest

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
TIMEOUT = 5.0


async def subscribed(sim: Any, stream: str) -> None:
    """Poll the simulator until some connection has subscribed to `stream`."""
    for _ in range(int(TIMEOUT / 0.02)):
        connections = await asyncio.to_thread(sim.admin, "GET", "/_sim/ws")
        if any(stream in c["streams"] for c in connections["connections"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nobody subscribed to {stream}")


def signed_auth(secret: bytes = b"paper") -> dict[str, Any]:
    expires = str(int(time.time() * 1000) + 10_000)
    signature = hmac.new(secret, f"GET/realtime{expires}".encode(), hashlib.sha256)
    return {"op": "auth", "args": ["paper", expires, signature.hexdigest()]}


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


def test_ticker_snapshot_then_deltas_with_the_mark_price(bybit_sim: Any) -> None:
    bybit_sim.set_price("BTCUSDT", "61000")

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(bybit_sim.ws_url) as ws:
            await ws.send_json({"op": "subscribe", "req_id": "7", "args": ["tickers.BTCUSDT"]})
            reply = await next_json(ws)
            assert (reply["success"], reply["op"], reply["req_id"]) == (True, "subscribe", "7")
            snapshot = await next_json(ws)
            assert (snapshot["type"], snapshot["data"]["markPrice"]) == ("snapshot", "61000")
            assert "fundingRate" in snapshot["data"]
            bybit_sim.set_price("BTCUSDT", "61500")
            while (frame := await next_json(ws))["data"]["markPrice"] != "61500":
                assert frame["type"] == "delta"
            await ws.send_json({"op": "ping", "req_id": "p"})
            while (frame := await next_json(ws)).get("op") != "ping":
                pass
            assert frame["ret_msg"] == "pong"
            await ws.send_json({"op": "subscribe", "args": ["tickers.NOPEUSDT"]})
            while "success" not in (frame := await next_json(ws)):
                pass
            assert frame["success"] is False

    asyncio.run(run())


def test_private_stream_needs_a_valid_signature(bybit_sim: Any) -> None:
    url = bybit_sim.url.replace("http", "ws") + "/v5/private"

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_json({"op": "subscribe", "args": ["order"]})
            assert (await next_json(ws))["success"] is False
            await ws.send_json(signed_auth(b"wrong"))
            assert (await next_json(ws))["success"] is False
            await ws.send_json(signed_auth())
            assert (await next_json(ws))["success"] is True
            await ws.send_json({"op": "subscribe", "args": ["order", "position"]})
            assert (await next_json(ws))["success"] is True

    asyncio.run(run())


def test_a_firing_stop_streams_untriggered_triggered_filled(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    url = bybit_sim.url.replace("http", "ws") + "/v5/private"

    async def run() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_json(signed_auth())
            await next_json(ws)
            await ws.send_json({"op": "subscribe", "args": ["order"]})
            await next_json(ws)
            await asyncio.to_thread(bybit_exchange.create_order, BTC, "market", "buy", 0.01)
            params = {
                "clientOrderId": "s1",
                "triggerPrice": 59000,
                "triggerDirection": "descending",
                "triggerBy": "MarkPrice",
                "reduceOnly": True,
                "closeOnTrigger": True,
            }
            await asyncio.to_thread(
                bybit_exchange.create_order, BTC, "market", "sell", 0.01, None, params
            )
            await asyncio.to_thread(bybit_sim.set_price, "BTCUSDT", "58900")
            states: list[str] = []
            while "Filled" not in states:
                frame = await next_json(ws)
                assert frame["topic"] == "order"
                states += [o["orderStatus"] for o in frame["data"] if o["orderLinkId"] == "s1"]
            assert states == ["Untriggered", "Triggered", "Filled"]

    asyncio.run(run())


def test_ccxt_pro_watches_the_mark_price(bybit_sim: Any, bybit_exchange_factory: Any) -> None:
    bybit_sim.set_price("BTCUSDT", "60500")

    async def run() -> None:
        ex = bybit_exchange_factory(pro=True)
        try:
            ticker = await asyncio.wait_for(ex.watch_ticker(BTC), TIMEOUT)
            assert ticker["markPrice"] == 60500
            bybit_sim.set_price("BTCUSDT", "60600")
            while ticker["markPrice"] != 60600:
                ticker = await asyncio.wait_for(ex.watch_ticker(BTC), TIMEOUT)
            tickers = await asyncio.wait_for(ex.watch_tickers([BTC, "ETH/USDT:USDT"]), TIMEOUT)
            assert set(tickers) <= {BTC, "ETH/USDT:USDT"} and tickers
        finally:
            await ex.close()

    asyncio.run(run())


def test_ccxt_pro_sees_a_stop_fire_as_order_updates(
    bybit_sim: Any, bybit_exchange_factory: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})

    async def run() -> None:
        ex = bybit_exchange_factory(pro=True)
        try:
            watcher = asyncio.ensure_future(ex.watch_orders())
            await subscribed(bybit_sim, "order")
            await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e1"})
            params = {
                "clientOrderId": "s1",
                "triggerPrice": 59000,
                "triggerDirection": "descending",
                "triggerBy": "MarkPrice",
                "reduceOnly": True,
                "closeOnTrigger": True,
            }
            stop = await ex.create_order(BTC, "market", "sell", 0.01, None, params)
            await asyncio.to_thread(bybit_sim.set_price, "BTCUSDT", "58900")
            await asyncio.wait_for(watcher, TIMEOUT)
            fired: list[dict[str, Any]] = []
            for _ in range(int(TIMEOUT / 0.1)):
                # ccxt keeps the newest state per order id in its cache; updates that arrive
                # between two watch calls land there without resolving the next watch
                cache = ex.orders or []
                fired = [o for o in cache if o["id"] == stop["id"] and o["status"] == "closed"]
                if fired:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ex.watch_orders(), 0.1)
            [order] = fired
            assert order["clientOrderId"] == "s1" and order["filled"] == 0.01
            assert order["info"]["orderStatus"] == "Filled" and order["stopLossPrice"] == 59000
        finally:
            await ex.close()

    asyncio.run(run())


def test_ccxt_pro_positions_and_balance(bybit_sim: Any, bybit_exchange_factory: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})

    async def run() -> None:
        ex = bybit_exchange_factory(pro=True)
        try:
            balance_watch = asyncio.ensure_future(ex.watch_balance())
            await subscribed(bybit_sim, "wallet")
            await ex.create_order(BTC, "market", "buy", 0.01)
            balance = await asyncio.wait_for(balance_watch, TIMEOUT)
            assert balance["USDT"]["total"] < 10000  # the taker fee
            positions = await asyncio.wait_for(ex.watch_positions(), TIMEOUT)
            assert any(p["symbol"] == BTC and p["contracts"] == 0.01 for p in positions)
        finally:
            await ex.close()

    asyncio.run(run())


def test_ccxt_pro_wrong_secret_fails_authentication(
    bybit_sim: Any, bybit_exchange_factory: Any
) -> None:
    async def run() -> None:
        ex = bybit_exchange_factory(pro=True, api_secret="wrong")
        ex.options.update(enableUnifiedMargin=False, enableUnifiedAccount=True)
        try:
            with pytest.raises(ccxt.AuthenticationError):
                await asyncio.wait_for(ex.watch_orders(), TIMEOUT)
        finally:
            await ex.close()

    asyncio.run(run())
