# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""The paper exchange through real ccxt (sync and async): endpoints, fills, stops."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from sim.runner import AdminError
from tests.fixtures.sim import (  # noqa: F401 - fixtures
    _paper_session_exchange,
    paper_exchange,
    paper_exchange_factory,
    sim,
    sim_server,
)

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
STOP = {"trigger": True}


def position(ex: Any, symbol: str = BTC) -> dict[str, Any] | None:
    found = [p for p in ex.fetch_positions([symbol]) if p["contracts"]]
    return found[0] if found else None


def test_markets_have_binance_filters(paper_exchange: Any) -> None:
    markets = paper_exchange.markets
    linear = [m for m in markets.values() if m["linear"] and m["swap"]]
    assert len(linear) >= 20
    btc = markets[BTC]
    assert btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] == 0.1
    assert btc["precision"]["amount"] == 0.001
    assert btc["limits"]["amount"]["min"] == 0.001
    assert btc["limits"]["cost"]["min"] == 100
    assert btc["active"] is True
    assert markets["LUNA/USDT:USDT"]["active"] is False


def test_time_balance_tickers_and_mark(sim: Any, paper_exchange: Any) -> None:
    assert paper_exchange.fetch_time() > 0
    balance = paper_exchange.fetch_balance()
    assert balance["USDT"]["total"] == 10000
    assert balance["USDT"]["free"] == 10000
    sim.set_price("ETHUSDT", "3100.5")
    assert paper_exchange.fetch_mark_price(ETH)["markPrice"] == 3100.5
    assert paper_exchange.fetch_ticker(ETH)["last"] == 3100.5
    assert len(paper_exchange.fetch_tickers()) >= 20
    marks = paper_exchange.fetch_mark_prices()
    assert marks[ETH]["markPrice"] == 3100.5


def test_market_buy_fills_at_mark_with_taker_fee(sim: Any, paper_exchange: Any) -> None:
    order = paper_exchange.create_order(BTC, "market", "buy", 0.01)
    assert order["status"] == "closed"
    assert order["filled"] == 0.01
    assert order["average"] == 60000
    trades = paper_exchange.fetch_my_trades(BTC)
    assert len(trades) == 1
    assert Decimal(str(trades[0]["fee"]["cost"])) == Decimal("0.3")  # 600 * 0.05 %
    pos = position(paper_exchange)
    assert pos is not None
    assert pos["side"] == "long"
    assert pos["contracts"] == 0.01
    assert pos["entryPrice"] == 60000


def test_realized_pnl_average_entry_and_wallet(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    sim.set_price("BTCUSDT", "62000")
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    pos = position(paper_exchange)
    assert pos is not None and pos["entryPrice"] == 61000
    sim.set_price("BTCUSDT", "63000")
    paper_exchange.create_order(BTC, "market", "sell", 0.02, params={"reduceOnly": True})
    assert position(paper_exchange) is None
    trades = paper_exchange.fetch_my_trades(BTC)
    assert Decimal(trades[-1]["info"]["realizedPnl"]) == Decimal("40")  # 0.02 * 2000
    fees = sum(Decimal(t["info"]["commission"]) for t in trades)
    wallet = Decimal(str(paper_exchange.fetch_balance()["USDT"]["total"]))
    assert wallet == Decimal("10000") + Decimal("40") - fees


def test_short_position_and_flip(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(ETH, "market", "sell", 0.5)
    pos = position(paper_exchange, ETH)
    assert pos is not None and pos["side"] == "short" and pos["contracts"] == 0.5
    paper_exchange.create_order(ETH, "market", "buy", 0.8)
    pos = position(paper_exchange, ETH)
    assert pos is not None and pos["side"] == "long"
    assert pos["contracts"] == pytest.approx(0.3)


def test_fetch_order_by_id_and_client_id_and_history(sim: Any, paper_exchange: Any) -> None:
    order = paper_exchange.create_order(
        BTC, "market", "buy", 0.002, params={"clientOrderId": "entry-1"}
    )
    assert order["clientOrderId"] == "entry-1"
    by_id = paper_exchange.fetch_order(order["id"], BTC)
    by_client = paper_exchange.fetch_order(None, BTC, params={"clientOrderId": "entry-1"})
    assert by_id["id"] == by_client["id"] == order["id"]
    assert by_client["status"] == "closed"
    assert [o["id"] for o in paper_exchange.fetch_orders(BTC)] == [order["id"]]


def test_limit_order_rests_then_fills_as_maker(sim: Any, paper_exchange: Any) -> None:
    order = paper_exchange.create_order(ETH, "limit", "buy", 0.1, 2900)
    assert order["status"] == "open"
    assert [o["id"] for o in paper_exchange.fetch_open_orders(ETH)] == [order["id"]]
    assert [o["id"] for o in paper_exchange.fetch_open_orders()] == [order["id"]]
    sim.set_price("ETHUSDT", "2899")
    filled = paper_exchange.fetch_order(order["id"], ETH)
    assert filled["status"] == "closed" and filled["average"] == 2900
    trade = paper_exchange.fetch_my_trades(ETH)[0]
    assert trade["takerOrMaker"] == "maker"
    assert Decimal(trade["info"]["commission"]) == Decimal("0.058")  # 290 * 0.02 %


def test_cancel_order_and_cancel_all(sim: Any, paper_exchange: Any) -> None:
    first = paper_exchange.create_order(ETH, "limit", "buy", 0.1, 2800)
    paper_exchange.create_order(ETH, "limit", "buy", 0.1, 2700)
    canceled = paper_exchange.cancel_order(first["id"], ETH)
    assert canceled["status"] == "canceled"
    assert len(paper_exchange.fetch_open_orders(ETH)) == 1
    paper_exchange.cancel_all_orders(ETH)
    assert paper_exchange.fetch_open_orders(ETH) == []


def test_leverage_margin_mode_position_mode(sim: Any, paper_exchange: Any) -> None:
    assert paper_exchange.set_leverage(5, BTC)["leverage"] == 5
    paper_exchange.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.MarginModeAlreadySet):  # -4046 "No need to change margin type."
        paper_exchange.set_margin_mode("isolated", BTC)
    paper_exchange.set_position_mode(True)
    assert paper_exchange.fetch_position_mode(BTC)["hedged"] is True
    paper_exchange.set_position_mode(False)
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    raw = paper_exchange.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})[0]
    assert raw["leverage"] == "5" and raw["marginType"] == "isolated"


def test_leverage_limits_margin(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.set_leverage(1, BTC)
    with pytest.raises(ccxt.InsufficientFunds):
        paper_exchange.create_order(BTC, "market", "buy", 0.2)  # 12000 > 10000 at 1x
    paper_exchange.set_leverage(20, BTC)
    assert paper_exchange.create_order(BTC, "market", "buy", 0.2)["status"] == "closed"


def test_stop_market_long_triggers_on_mark(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    stop = paper_exchange.create_order(
        BTC,
        "market",
        "sell",
        0.01,
        params={
            "stopPrice": 59000,
            "reduceOnly": True,
            "workingType": "MARK_PRICE",
            "clientOrderId": "sl-1",
        },
    )
    assert stop["status"] == "open" and stop["triggerPrice"] == 59000
    assert stop["clientOrderId"] == "sl-1"
    open_stops = paper_exchange.fetch_open_orders(BTC, params=STOP)
    assert [o["id"] for o in open_stops] == [stop["id"]]
    assert paper_exchange.fetch_open_orders(BTC) == []  # not in the plain book
    sim.set_price("BTCUSDT", "59000.1")
    assert position(paper_exchange) is not None
    sim.set_price("BTCUSDT", "58950")
    assert position(paper_exchange) is None
    done = paper_exchange.fetch_order(None, BTC, params={"clientOrderId": "sl-1", **STOP})
    assert done["status"] == "closed"
    assert done["info"]["algoStatus"] == "FINISHED"
    exit_trade = paper_exchange.fetch_my_trades(BTC)[-1]
    assert exit_trade["price"] == 58950 and exit_trade["side"] == "sell"


def test_stop_market_short_and_take_profit(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(ETH, "market", "sell", 1)
    paper_exchange.create_order(
        ETH, "market", "buy", 1, params={"stopPrice": 3100, "reduceOnly": True}
    )
    tp = paper_exchange.create_order(
        ETH, "market", "buy", 1, params={"takeProfitPrice": 2900, "reduceOnly": True}
    )
    assert tp["info"]["orderType"] == "TAKE_PROFIT_MARKET"
    sim.set_price("ETHUSDT", "2899")
    assert position(paper_exchange, ETH) is None
    stops = paper_exchange.fetch_open_orders(ETH, params=STOP)
    assert len(stops) == 1  # the stop-loss is left behind: the engine must clean it
    assert stops[0]["triggerPrice"] == 3100


def test_stop_that_would_trigger_immediately_is_refused(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        paper_exchange.create_order(
            BTC, "market", "sell", 0.01, params={"stopPrice": 60000, "reduceOnly": True}
        )
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        paper_exchange.create_order(
            BTC, "market", "buy", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
        )


def test_close_position_stop_has_zero_quantity_and_closes_all(
    sim: Any, paper_exchange: Any
) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.03)
    stop = paper_exchange.create_order(
        BTC, "market", "sell", None, params={"stopPrice": 59000, "closePosition": True}
    )
    assert stop["info"]["closePosition"] is True
    assert stop["info"]["quantity"] == "0"  # like Binance: it protects the whole position
    with pytest.raises(ccxt.ExchangeError):  # -4130: one closePosition stop per direction
        paper_exchange.create_order(
            BTC, "market", "sell", None, params={"stopPrice": 58000, "closePosition": True}
        )
    paper_exchange.create_order(BTC, "market", "buy", 0.02)
    sim.set_price("BTCUSDT", "58000")
    assert position(paper_exchange) is None
    assert sum(t["amount"] for t in paper_exchange.fetch_my_trades(BTC)[-1:]) == 0.05


def test_reduce_only_never_opens_or_increases(sim: Any, paper_exchange: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder):
        paper_exchange.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.InvalidOrder):
        paper_exchange.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})
    closing = paper_exchange.create_order(BTC, "market", "sell", 0.05, params={"reduceOnly": True})
    assert closing["filled"] == 0.01  # shrunk to the position, never flips it
    assert position(paper_exchange) is None


def test_reduce_only_stop_without_position_expires_on_trigger(
    sim: Any, paper_exchange: Any
) -> None:
    stop = paper_exchange.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
    )
    assert stop["status"] == "open"  # accepted: the check happens at trigger time
    sim.set_price("BTCUSDT", "58000")
    fetched = paper_exchange.fetch_order(stop["id"], BTC, params=STOP)
    assert fetched["status"] == "expired"
    assert position(paper_exchange) is None


def test_stops_survive_position_closed_by_hand(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    paper_exchange.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
    )
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    assert position(paper_exchange) is None
    state = sim.state()
    assert len(state["open_algo_orders"]) == 1
    paper_exchange.cancel_all_orders(BTC, params=STOP)
    assert paper_exchange.fetch_open_orders(BTC, params=STOP) == []


def test_cancel_algo_order_by_id_and_client_id(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    first = paper_exchange.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
    )
    paper_exchange.create_order(
        BTC,
        "market",
        "sell",
        0.01,
        params={"stopPrice": 58000, "reduceOnly": True, "clientOrderId": "sl-2"},
    )
    assert paper_exchange.cancel_order(first["id"], BTC, params=STOP)["id"] == first["id"]
    paper_exchange.cancel_order(None, BTC, params={"clientOrderId": "sl-2", **STOP})
    assert paper_exchange.fetch_open_orders(BTC, params=STOP) == []
    history = paper_exchange.fetch_orders(BTC, params=STOP)
    assert sorted(o["status"] for o in history) == ["canceled", "canceled"]


def test_admin_open_position_and_manual_order(sim: Any, paper_exchange: Any) -> None:
    sim.admin("POST", "/_sim/open_position", {"symbol": "SOLUSDT", "side": "SELL", "quantity": "3"})
    pos = position(paper_exchange, "SOL/USDT:USDT")
    assert pos is not None and pos["side"] == "short" and pos["contracts"] == 3
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "SOLUSDT",
            "side": "BUY",
            "type": "STOP_MARKET",
            "triggerPrice": "160",
            "closePosition": True,
        },
    )
    state = sim.state()
    assert state["open_algo_orders"][0]["symbol"] == "SOLUSDT"
    assert state["positions"][0]["positionAmt"] == "-3"


def test_request_log_records_weights_and_clears(sim: Any, paper_exchange: Any) -> None:
    start = sim.requests()["next"]
    paper_exchange.fetch_positions()
    paper_exchange.fetch_open_orders()
    log = sim.requests(start)["requests"]
    assert [(r["method"], r["path"]) for r in log] == [
        ("GET", "/fapi/v3/positionRisk"),
        ("GET", "/fapi/v1/openOrders"),
    ]
    assert [r["weight"] for r in log] == [5, 40]
    assert paper_exchange.last_response_headers["X-MBX-USED-WEIGHT-1M"].isdigit()
    sim.admin("DELETE", "/_sim/requests")
    assert sim.requests()["requests"] == []


def price_path(sim: Any, ticks: int, seed: int | None = None) -> list[dict[str, str]]:
    """Prices after each of `ticks` ticks from a reset, indexed by tick (clock stopped)."""
    sim.reset(**({} if seed is None else {"seed": seed}))
    sim.admin("POST", "/_sim/volatility", {"volatility": 2.0})
    path = []
    for index in range(1, ticks + 1):
        moved = sim.tick()
        assert moved["ticks"] == index  # no tick but ours: the wall clock is stopped
        path.append(moved["prices"])
    return path


def test_same_seed_same_prices(sim: Any) -> None:
    try:
        with sim.paused_clock():
            first = price_path(sim, 50)
            assert first[0] != first[-1]  # the walk moves
            assert price_path(sim, 50) == first
            other = price_path(sim, 50, seed=8)
            assert other[-1] != first[-1]
            assert price_path(sim, 50, seed=7) == first
    finally:
        sim.reset(seed=7)


def test_paused_clock_holds_prices_and_tick_steps_them(sim: Any) -> None:
    sim.admin("POST", "/_sim/volatility", {"volatility": 2.0})
    interval = sim.clock()["tick_interval"]
    with sim.paused_clock():
        held = sim.admin("GET", "/_sim/prices")
        time.sleep(interval * 5)  # five wall-clock ticks' worth: none may move anything
        assert sim.admin("GET", "/_sim/prices") == held
        assert sim.clock()["paused"] is True
        stepped = sim.tick(2)
        assert stepped["ticks"] == held["ticks"] + 2
        assert stepped["prices"] != held["prices"]
    assert sim.clock()["paused"] is False
    deadline = time.monotonic() + 30
    while sim.clock()["ticks"] <= stepped["ticks"]:  # the wall clock runs again
        assert time.monotonic() < deadline, "the tick loop did not restart"
        time.sleep(interval)
    with pytest.raises(AdminError) as refused:
        sim.admin("POST", "/_sim/clock", {"paused": "yes"})
    assert refused.value.status == 400


def test_linear_price_path_moves_and_triggers(sim: Any, paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    paper_exchange.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
    )
    sim.admin("POST", "/_sim/path", {"symbol": "BTCUSDT", "target": "58000", "seconds": 1})
    ticks = sim.admin("POST", "/_sim/tick", {"count": 10})
    assert ticks["prices"]["BTCUSDT"] == "58000"
    assert position(paper_exchange) is None


def test_async_client_full_cycle(sim: Any, paper_exchange_factory: Any) -> None:
    async def run() -> None:
        ex = paper_exchange_factory(async_mode=True)
        try:
            await ex.set_leverage(10, ETH)
            order = await ex.create_order(ETH, "market", "buy", 0.1)
            assert order["status"] == "closed"
            stop = await ex.create_order(
                ETH, "market", "sell", 0.1, params={"stopPrice": 2900, "reduceOnly": True}
            )
            assert (await ex.fetch_order(stop["id"], ETH, params=STOP))["status"] == "open"
            positions = await ex.fetch_positions([ETH])
            assert positions[0]["contracts"] == 0.1
            balance = await ex.fetch_balance()
            assert balance["USDT"]["total"] < 10000
            await ex.cancel_order(stop["id"], ETH, params=STOP)
            assert await ex.fetch_open_orders(ETH, params=STOP) == []
            assert len(await ex.fetch_my_trades(ETH)) == 1
        finally:
            await ex.close()

    asyncio.run(run())
