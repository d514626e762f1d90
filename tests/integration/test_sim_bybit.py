"""The Bybit v5 dialect of the paper exchange through real ccxt `bybit` (sync and async):
every endpoint the engine uses, Bybit's error codes as ccxt maps them, pagination, hedge
mode, the late position after an entry, the order rate limit, faults and the admin API."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from core.exchange.factory import build_exchange

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
SOL = "SOL/USDT:USDT"


def stop_params(link: str, direction: str = "descending", **extra: Any) -> dict[str, Any]:
    return {
        "clientOrderId": link,
        "triggerPrice": 58800,
        "triggerDirection": direction,
        "triggerBy": "MarkPrice",
        "reduceOnly": True,
        "closeOnTrigger": True,
        **extra,
    }


def contracts(ex: Any, symbol: str = BTC) -> float:
    return sum(p["contracts"] or 0 for p in ex.fetch_positions([symbol]))


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def link_order(ex: Any, link: str, symbol: str = BTC) -> dict[str, Any]:
    market = ex.market(symbol)
    response = ex.privateGetV5OrderRealtime(
        {"category": "linear", "symbol": market["id"], "orderLinkId": link}
    )
    [row] = response["result"]["list"]
    return ex.parse_order(row, market)


def entry(ex: Any, bybit_sim: Any, link: str = "v1-t-e0", qty: float = 0.01) -> None:
    """A filled long whose position is already visible (delay off for this setup step)."""
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    ex.create_order(BTC, "market", "buy", qty, None, {"clientOrderId": link})


# -- market data and account ----------------------------------------------------------------


def test_markets_are_linear_only_with_bybit_filters(bybit_sim: Any, bybit_exchange: Any) -> None:
    markets = bybit_exchange.markets
    assert all(m["linear"] and m["swap"] for m in markets.values())
    assert len(markets) == 24  # LUNAUSDT is delivering: not listed as Trading
    btc = markets[BTC]
    assert btc["id"] == "BTCUSDT"
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.1, 0.001)
    assert btc["limits"]["amount"]["min"] == 0.001 and btc["limits"]["cost"]["min"] == 100
    assert btc["info"]["lotSizeFilter"]["maxMktOrderQty"] == "120"
    paths = {r["path"] for r in bybit_sim.requests()["requests"]}
    assert "/v5/asset/coin/query-info" not in paths


def test_load_markets_calls_only_linear_instruments(bybit_sim: Any) -> None:
    ex = build_exchange("paper", url=bybit_sim.url, paper_dialect="bybit")
    ex.load_markets()
    requests = bybit_sim.requests()["requests"]
    assert {r["path"] for r in requests} == {"/v5/market/instruments-info"}
    assert len(requests) == 2  # Trading, then PreLaunch


def test_tickers_carry_mark_price_and_balance_is_unified(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.set_price("ETHUSDT", "3100.5")
    assert bybit_exchange.fetch_ticker(ETH)["markPrice"] == 3100.5
    assert bybit_exchange.fetch_tickers()[ETH]["markPrice"] == 3100.5
    balance = bybit_exchange.fetch_balance()
    assert balance["USDT"]["total"] == 10000 and balance["USDT"]["free"] == 10000
    assert bybit_exchange.fetch_time() > 0


def test_market_entry_answers_ids_then_fills_at_mark_with_taker_fee(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    created = bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e1"})
    assert created["status"] is None and created["clientOrderId"] == "e1"  # ids only
    order = link_order(bybit_exchange, "e1")
    assert order["id"] == created["id"]
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, 60000)
    [trade] = bybit_exchange.fetch_my_trades(BTC)
    assert trade["order"] == created["id"]
    assert Decimal(str(trade["fee"]["cost"])) == Decimal("0.3")
    assert trade["info"]["execPnl"] == "0"


def test_fresh_position_is_invisible_then_shows_up(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 400})
    bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    [slot] = bybit_exchange.fetch_positions([BTC])
    assert slot["contracts"] == 0 and slot["side"] is None
    assert bybit_exchange.fetch_positions() == []
    state = bybit_sim.state()
    assert state["positions"][0]["visible"] is False
    wait_until(lambda: contracts(bybit_exchange) == 0.01)
    [position] = bybit_exchange.fetch_positions()
    assert position["side"] == "long" and position["entryPrice"] == 60000


def test_stop_right_after_entry_is_refused_until_the_position_shows(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 400})
    bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    wait_until(lambda: contracts(bybit_exchange) == 0.01)
    # the refused request created nothing: the same link id goes through now
    stop = bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    assert link_order(bybit_exchange, "s1")["id"] == stop["id"]


# -- conditional orders ---------------------------------------------------------------------


def test_stop_waits_untriggered_then_fires_on_mark_under_the_same_id(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    entry(bybit_exchange, bybit_sim)
    stop = bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    order = link_order(bybit_exchange, "s1")
    info = order["info"]
    assert (info["orderStatus"], info["stopOrderType"], info["triggerBy"]) == (
        "Untriggered",
        "Stop",
        "MarkPrice",
    )
    assert (info["triggerDirection"], info["reduceOnly"], info["closeOnTrigger"]) == (
        2,
        True,
        True,
    )
    assert order["stopLossPrice"] == 58800 and order["status"] == "open"
    bybit_sim.set_price("BTCUSDT", "58700")
    fired = link_order(bybit_exchange, "s1")
    assert fired["id"] == stop["id"] and fired["info"]["orderStatus"] == "Filled"
    assert contracts(bybit_exchange) == 0
    assert bybit_exchange.fetch_open_orders() == []


def test_stop_on_the_wrong_side_of_the_mark_is_refused(bybit_sim: Any, bybit_exchange: Any) -> None:
    entry(bybit_exchange, bybit_sim)
    with pytest.raises(ccxt.InvalidOrder, match="110093"):
        params = stop_params("s1", triggerPrice=61000)
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, params)
    with pytest.raises(ccxt.InvalidOrder, match="110092"):
        params = stop_params("s2", direction="ascending", triggerPrice=59000)
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, params)


def test_reduce_only_stop_survives_its_position_and_expires_when_it_fires(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    entry(bybit_exchange, bybit_sim)
    bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    bybit_sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    assert [o["clientOrderId"] for o in bybit_exchange.fetch_open_orders()] == ["s1"]
    bybit_sim.set_price("BTCUSDT", "58000")
    fired = link_order(bybit_exchange, "s1")
    assert (fired["status"], fired["info"]["orderStatus"]) == ("canceled", "Deactivated")
    assert contracts(bybit_exchange) == 0


def test_amend_moves_a_stop_in_place(bybit_sim: Any, bybit_exchange: Any) -> None:
    entry(bybit_exchange, bybit_sim)
    stop = bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    params = {"triggerPrice": 59500, "triggerBy": "MarkPrice"}
    edited = bybit_exchange.edit_order(stop["id"], BTC, "market", "sell", None, None, params)
    assert edited["id"] == stop["id"]
    moved = link_order(bybit_exchange, "s1")
    assert moved["triggerPrice"] == 59500 and moved["info"]["orderStatus"] == "Untriggered"
    with pytest.raises(ccxt.ExchangeError, match="34040"):
        bybit_exchange.edit_order(stop["id"], BTC, "market", "sell", None, None, params)
    with pytest.raises(ccxt.InvalidOrder, match="110093"):
        too_high = {"triggerPrice": 60500, "triggerBy": "MarkPrice"}
        bybit_exchange.edit_order(stop["id"], BTC, "market", "sell", None, None, too_high)


def test_cancel_regular_and_conditional_then_not_found(bybit_sim: Any, bybit_exchange: Any) -> None:
    entry(bybit_exchange, bybit_sim)
    stop = bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    limit = bybit_exchange.create_order(BTC, "limit", "buy", 0.01, 50000, {"clientOrderId": "l1"})
    bybit_exchange.cancel_order(stop["id"], BTC)
    bybit_exchange.cancel_order(limit["id"], BTC)
    assert link_order(bybit_exchange, "s1")["info"]["orderStatus"] == "Deactivated"
    assert link_order(bybit_exchange, "l1")["info"]["orderStatus"] == "Cancelled"
    with pytest.raises(ccxt.OrderNotFound):
        bybit_exchange.cancel_order(stop["id"], BTC)
    assert bybit_exchange.fetch_open_orders() == []


def test_cancel_all_takes_only_the_filtered_kind(bybit_sim: Any, bybit_exchange: Any) -> None:
    entry(bybit_exchange, bybit_sim)
    bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    bybit_exchange.create_order(BTC, "limit", "buy", 0.01, 50000, {"clientOrderId": "l1"})
    bybit_exchange.cancel_all_orders(BTC, {"trigger": True})
    assert [o["clientOrderId"] for o in bybit_exchange.fetch_open_orders()] == ["l1"]


def test_link_id_is_unique_across_all_orders_and_at_most_36_chars(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e1"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):  # filled, still taken
        bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e1"})
    with pytest.raises(ccxt.BadRequest, match="orderLinkId invalid"):
        bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "x" * 37})


def test_conditional_orders_per_symbol_are_capped(bybit_sim: Any, bybit_exchange: Any) -> None:
    entry(bybit_exchange, bybit_sim)
    bybit_sim.admin("POST", "/_sim/config", {"max_stop_orders": 2, "order_rate_limit": None})
    for i in range(2):
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params(f"s{i}"))
    with pytest.raises(ccxt.InvalidOrder, match="110009"):
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s9"))


# -- lists: pagination, history, executions -------------------------------------------------


def test_open_orders_are_paginated_fifty_a_page_by_cursor(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"order_rate_limit": None})
    for i in range(60):
        bybit_exchange.create_order(
            BTC, "limit", "buy", 0.01, 50000 - i, {"clientOrderId": f"l{i}"}
        )
    request = {"category": "linear", "settleCoin": "USDT", "limit": 50}
    first = bybit_exchange.privateGetV5OrderRealtime(request)["result"]
    assert len(first["list"]) == 50 and first["nextPageCursor"]
    second = bybit_exchange.privateGetV5OrderRealtime(
        {**request, "cursor": first["nextPageCursor"]}
    )["result"]
    assert len(second["list"]) == 10 and second["nextPageCursor"] == ""
    links = {o["orderLinkId"] for o in first["list"] + second["list"]}
    assert links == {f"l{i}" for i in range(60)}
    assert first["list"][0]["orderLinkId"] == "l59"  # newest first
    with pytest.raises(ccxt.BadRequest, match="limit invalid"):
        bybit_exchange.privateGetV5OrderRealtime({**request, "limit": 51})
    with pytest.raises(ccxt.BadRequest, match="settleCoin"):
        bybit_exchange.privateGetV5OrderRealtime({"category": "linear"})
    assert len(bybit_exchange.fetch_open_orders(None, None, None, {"paginate": True})) == 60


def test_realtime_keeps_the_latest_closed_orders_history_keeps_all(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"realtime_closed_window": 2})
    for i in range(3):
        bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": f"e{i}"})
    request = {"category": "linear", "symbol": "BTCUSDT", "orderLinkId": "e0"}
    assert bybit_exchange.privateGetV5OrderRealtime(request)["result"]["list"] == []
    [old] = bybit_exchange.privateGetV5OrderHistory(request)["result"]["list"]
    assert old["orderStatus"] == "Filled"
    closed = bybit_exchange.fetch_closed_orders(BTC)
    assert sorted(o["clientOrderId"] for o in closed) == ["e0", "e1", "e2"]


def test_realized_pnl_and_closed_size_on_the_closing_execution(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    entry(bybit_exchange, bybit_sim)
    bybit_sim.set_price("BTCUSDT", "61000")
    bybit_exchange.create_order(BTC, "market", "sell", 0.02, None, {"reduceOnly": True})
    closing = bybit_exchange.fetch_my_trades(BTC)
    by_side = {t["side"]: t for t in closing}
    assert by_side["sell"]["amount"] == 0.01  # reduce-only trimmed to the position
    assert by_side["sell"]["info"]["execPnl"] == "10"
    assert by_side["sell"]["info"]["closedSize"] == "0.01"
    balance = bybit_exchange.fetch_balance()["USDT"]["total"]
    assert Decimal(str(balance)) == Decimal("10000") + 10 - Decimal("0.3") - Decimal("0.305")


# -- position settings ----------------------------------------------------------------------


def test_leverage_and_margin_mode(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_exchange.set_leverage(5, BTC)
    with pytest.raises(ccxt.BadRequest, match="110043"):
        bybit_exchange.set_leverage(5, BTC)
    with pytest.raises(ccxt.BadRequest, match="buyLeverage invalid"):
        bybit_exchange.set_leverage(500, BTC)
    assert bybit_exchange.set_margin_mode("isolated", BTC)["retCode"] == 0
    entry(bybit_exchange, bybit_sim)
    [position] = bybit_exchange.fetch_positions([BTC])
    assert position["leverage"] == 5
    with pytest.raises(ccxt.ExchangeError, match="3400045"):
        bybit_exchange.set_margin_mode("cross", BTC)


def test_hedge_mode_keeps_long_and_short_slots(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit_exchange.set_position_mode(True)
    with pytest.raises(ccxt.NoChange, match="110025"):
        bybit_exchange.set_position_mode(True)
    with pytest.raises(ccxt.BadRequest, match="position idx not match"):
        bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    bybit_exchange.create_order(BTC, "market", "buy", 0.01, None, {"positionIdx": 1})
    bybit_exchange.create_order(BTC, "market", "sell", 0.02, None, {"positionIdx": 2})
    slots = {p["info"]["positionIdx"]: p for p in bybit_exchange.fetch_positions()}
    assert (slots[1]["side"], slots[1]["contracts"]) == ("long", 0.01)
    assert (slots[2]["side"], slots[2]["contracts"]) == ("short", 0.02)
    assert all(p["hedged"] for p in slots.values())
    # the long's stop: a sell on slot 1; it closes only the long
    params = stop_params("s1", positionIdx=1)
    bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, params)
    bybit_sim.set_price("BTCUSDT", "58000")
    slots = {p["info"]["positionIdx"]: p for p in bybit_exchange.fetch_positions()}
    assert list(slots) == [2] and slots[2]["contracts"] == 0.02
    with pytest.raises(ccxt.BadRequest, match="110024"):
        bybit_exchange.set_position_mode(False)


def test_position_stop_loss_via_trading_stop_closes_the_whole_slot(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    with pytest.raises(ccxt.BadRequest, match="zero position"):
        bybit_exchange.privatePostV5PositionTradingStop(
            {"category": "linear", "symbol": "BTCUSDT", "positionIdx": 0, "stopLoss": "58000"}
        )
    entry(bybit_exchange, bybit_sim, qty=0.02)
    request = {
        "category": "linear",
        "symbol": "BTCUSDT",
        "positionIdx": 0,
        "stopLoss": "58000",
        "slTriggerBy": "MarkPrice",
        "tpslMode": "Full",
    }
    assert bybit_exchange.privatePostV5PositionTradingStop(request)["retCode"] == 0
    [order] = bybit_exchange.fetch_open_orders()
    info = order["info"]
    assert (info["stopOrderType"], info["qty"], info["tpslMode"]) == ("StopLoss", "0", "Full")
    assert bybit_exchange.fetch_positions()[0]["stopLossPrice"] == 58000
    with pytest.raises(ccxt.BadRequest, match="should lower"):
        bybit_exchange.privatePostV5PositionTradingStop({**request, "stopLoss": "61000"})
    bybit_sim.set_price("BTCUSDT", "57900")
    assert contracts(bybit_exchange) == 0
    assert bybit_exchange.fetch_open_orders() == []


def test_position_stop_loss_goes_away_with_its_position(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    entry(bybit_exchange, bybit_sim)
    bybit_exchange.privatePostV5PositionTradingStop(
        {"category": "linear", "symbol": "BTCUSDT", "positionIdx": 0, "stopLoss": "58000"}
    )
    bybit_sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    assert bybit_exchange.fetch_open_orders() == []


# -- errors as ccxt maps them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "params", "exc", "code"),
    [
        ((BTC, "market", "buy", 0.001), {}, ccxt.InvalidOrder, "110094"),  # below min value
        ((BTC, "market", "buy", 5), {}, ccxt.InsufficientFunds, "110007"),
        ((BTC, "market", "sell", 0.01), {"reduceOnly": True}, ccxt.InvalidOrder, "110017"),
    ],
)
def test_refusals_map_to_ccxt_classes(
    bybit_sim: Any,
    bybit_exchange: Any,
    args: tuple[Any, ...],
    params: dict[str, Any],
    exc: type,
    code: str,
) -> None:
    with pytest.raises(exc, match=code):
        bybit_exchange.create_order(*args, None, params)
    assert bybit_sim.state()["positions"] == []


@pytest.mark.parametrize(
    ("qty", "message"),
    [
        ("0.0005", "exceeds minimum limit"),
        ("0.0015", "Qty invalid"),
        ("200", "exceeds maximum limit"),  # above maxMktOrderQty for a market order
    ],
)
def test_quantities_off_the_filters_are_10001(
    bybit_sim: Any, bybit_exchange: Any, qty: str, message: str
) -> None:
    """ccxt rounds before sending; the raw endpoint shows what Bybit itself answers."""
    request = {
        "category": "linear",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Market",
        "qty": qty,
    }
    with pytest.raises(ccxt.BadRequest, match=message):
        bybit_exchange.privatePostV5OrderCreate(request)


def test_wrong_secret_and_stale_timestamp_are_refused(bybit_sim: Any) -> None:
    bad = build_exchange(
        "paper", url=bybit_sim.url, api_key="paper", api_secret="wrong", paper_dialect="bybit"
    )
    bad.options.update(enableUnifiedMargin=False, enableUnifiedAccount=True)
    with pytest.raises(ccxt.AuthenticationError, match="10004"):
        bad.fetch_balance()
    wrong_key = build_exchange(
        "paper", url=bybit_sim.url, api_key="nope", api_secret="paper", paper_dialect="bybit"
    )
    with pytest.raises(ccxt.AuthenticationError, match="10003"):
        wrong_key.fetch_balance()
    late = build_exchange(
        "paper", url=bybit_sim.url, api_key="paper", api_secret="paper", paper_dialect="bybit"
    )
    late.options["timeDifference"] = 60_000  # our clock a minute behind the server's
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        late.fetch_balance()


def test_order_endpoints_allow_ten_per_second_then_10006(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_exchange.fetch_balance()  # account-type lookups out of the way
    limited = 0
    for i in range(25):  # a burst: the excess is refused, not queued
        try:
            bybit_exchange.create_order(
                BTC, "limit", "buy", 0.01, 50000, {"clientOrderId": f"r{i}"}
            )
        except ccxt.RateLimitExceeded as exc:
            assert "10006" in str(exc)
            limited += 1
    assert limited >= 1
    assert bybit_exchange.last_response_headers["X-Bapi-Limit"] == "10"
    log = [r for r in bybit_sim.requests()["requests"] if r["path"] == "/v5/order/create"]
    accepted = [r["time"] for r in log if r["code"] is None]
    assert len(bybit_exchange.fetch_open_orders()) == len(accepted) == 25 - limited
    for refused in (r for r in log if r["code"] == 10006):
        # refused only when ten were admitted within the second before it
        window = [t for t in accepted if refused["time"] - 1000 < t <= refused["time"]]
        assert len(window) == 10


def test_retcode_sent_as_string_is_still_understood(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"retcode_as_string": True})
    assert bybit_exchange.fetch_ticker(BTC)["markPrice"] == 60000
    response = bybit_exchange.privateGetV5AccountWalletBalance({"accountType": "UNIFIED"})
    assert response["retCode"] == "0"
    with pytest.raises(ccxt.InvalidOrder, match='"retCode":"110017"'):
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "exc"),
    [
        ("http_error", {"status": 503}, ccxt.ExchangeNotAvailable),
        ("http_error", {"status": 503, "body": "json"}, ccxt.ExchangeError),
        ("rate_limit", {}, ccxt.RateLimitExceeded),
        ("ban", {}, ccxt.RateLimitExceeded),
    ],
)
def test_rejecting_faults_do_not_execute(
    bybit_sim: Any, bybit_exchange: Any, kind: str, extra: dict[str, Any], exc: type
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit_sim.fault("order/create", kind, count=1, method="POST", **extra)
    with pytest.raises(exc):
        bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    assert contracts(bybit_exchange) == 0
    bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    assert contracts(bybit_exchange) == 0.01


def test_after_lets_the_entry_through_and_fails_the_stop(
    bybit_sim: Any, bybit_exchange: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit_sim.fault("create", "http_error", method="POST", after=1, count=1)
    bybit_exchange.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))


def test_timeout_after_accept_executes_the_order(
    bybit_sim: Any, bybit_exchange_factory: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    ex = bybit_exchange_factory(timeout_ms=500)
    ex.fetch_balance()
    bybit_sim.fault("order/create", "timeout_after_accept", count=1, mode="drop")
    with pytest.raises(ccxt.NetworkError):
        ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e1"})
    assert link_order(ex, "e1")["status"] == "closed"
    assert contracts(ex) == 0.01


def test_delayed_and_partial_fills(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_sim.fault("order/create", "delayed_fill", count=1, delay_ms=200)
    bybit_exchange.create_order(BTC, "market", "buy", 0.02, None, {"clientOrderId": "d1"})
    assert link_order(bybit_exchange, "d1")["info"]["orderStatus"] == "New"
    wait_until(lambda: link_order(bybit_exchange, "d1")["status"] == "closed")
    bybit_sim.fault("order/create", "partial_fill", count=1, fraction="0.5")
    bybit_exchange.create_order(ETH, "market", "buy", 0.2, None, {"clientOrderId": "p1"})
    partial = link_order(bybit_exchange, "p1", ETH)
    assert partial["filled"] == 0.1 and partial["info"]["orderStatus"] == "PartiallyFilledCanceled"


def test_fill_faults_wait_for_a_market_order(bybit_sim: Any, bybit_exchange: Any) -> None:
    """Stops share order/create with entries: a fill fault is not used up by a stop."""
    entry(bybit_exchange, bybit_sim)
    bybit_sim.fault("order/create", "partial_fill", count=1, fraction="0.5")
    bybit_exchange.create_order(BTC, "market", "sell", 0.01, None, stop_params("s1"))
    assert link_order(bybit_exchange, "s1")["info"]["orderStatus"] == "Untriggered"
    bybit_exchange.create_order(ETH, "market", "buy", 0.2, None, {"clientOrderId": "p1"})
    assert link_order(bybit_exchange, "p1", ETH)["filled"] == 0.1


# -- async client and admin -----------------------------------------------------------------


def test_async_client_places_and_reads_orders(bybit_sim: Any, bybit_exchange_factory: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})

    async def run() -> None:
        ex = bybit_exchange_factory(async_mode=True)
        try:
            await ex.create_order(SOL, "market", "sell", 1, None, {"clientOrderId": "a1"})
            positions = await ex.fetch_positions()
            assert [(p["symbol"], p["side"]) for p in positions] == [(SOL, "short")]
            await ex.create_order(
                SOL,
                "market",
                "buy",
                1,
                None,
                stop_params("a2", direction="ascending", triggerPrice=160),
            )
            [stop] = await ex.fetch_open_orders(SOL)
            assert stop["clientOrderId"] == "a2" and stop["stopLossPrice"] == 160
        finally:
            await ex.close()

    asyncio.run(run())


def test_admin_acts_by_hand_in_bybit_terms(bybit_sim: Any, bybit_exchange: Any) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit_sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "SELL", "quantity": "2"}
    )
    state = bybit_sim.state()
    assert state["dialect"] == "bybit" and state["position_mode"] == "one_way"
    [position] = state["positions"]
    assert (position["symbol"], position["side"], position["size"]) == ("ETHUSDT", "Sell", "2")
    manual = bybit_sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "ETHUSDT",
            "side": "BUY",
            "qty": "2",
            "triggerPrice": "3300",
            "reduceOnly": True,
        },
    )
    assert manual["stopOrderType"] == "Stop" and manual["orderLinkId"] == ""
    closed = bybit_sim.admin("POST", "/_sim/close_position", {"symbol": "ETHUSDT"})
    assert closed["closed"] is True
    assert bybit_sim.state()["positions"] == []
    snapshot = bybit_sim.admin("GET", "/_sim/snapshot")
    assert len(snapshot["trades"]) == 2 and snapshot["config"]["dialect"] == "bybit"
    with bybit_sim.paused_clock():  # no wall-clock tick may land between these two reads
        start = bybit_sim.clock()["ticks"]
        assert bybit_sim.admin("POST", "/_sim/tick", {"count": 3})["ticks"] == start + 3
