"""Bybit's error codes by what the engine does about them, and the dialect's pure parts:
order shapes to snapshots, position indexes by mode, the dialect chosen per client."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pytest

from core.exchange import errors as e
from core.exchange.adapter import ExchangeAdapter, dialect_for
from core.exchange.binance import BinanceDialect
from core.exchange.bybit import BybitDialect
from core.exchange.factory import build_exchange


def bybit_error(code: int | str, msg: str, cls: type = ccxt.ExchangeError) -> Exception:
    quoted = f'"{code}"' if isinstance(code, str) else str(code)
    return cls(f'bybit {{"retCode":{quoted},"retMsg":"{msg}","result":{{}},"retExtInfo":{{}}}}')


@pytest.mark.parametrize(
    ("code", "msg", "expected"),
    [
        (10001, "The number of contracts exceeds minimum limit allowed", e.BelowMinimum),
        (10001, "The number of contracts exceeds maximum limit allowed", e.BelowMinimum),
        (10001, "Qty invalid: qty must be a multiple of qtyStep", e.BelowMinimum),
        (10001, "params error: symbol invalid", e.SymbolUnavailable),
        (10001, "position idx not match position mode", e.OrderRejected),
        (10002, "invalid request, please check your server timestamp", e.Retryable),
        (10003, "API key is invalid.", e.AuthenticationFailed),
        (10004, "error sign!", e.AuthenticationFailed),
        (10006, "Too many visits!", e.RateLimited),
        ("10006", "Too many visits!", e.RateLimited),  # retCode sent as a string
        (10016, "Internal system error.", e.VenueUnavailable),
        (110001, "order not exists or too late to cancel", e.OrderNotFound),
        (110007, "ab not enough for new order", e.InsufficientFunds),
        ("110007", "ab not enough for new order", e.InsufficientFunds),
        (
            110017,
            "current position is zero, cannot fix reduce-only order qty",
            e.ReduceOnlyRejected,
        ),
        (110023, "This contract only supports position reduction", e.SymbolUnavailable),
        (110072, "OrderLinkedID is duplicate", e.OrderRejected),
        (110092, "expect Rising, but trigger_price[1] <= current[2]", e.WouldTriggerImmediately),
        (110093, "expect Falling, but trigger_price[2] >= current[1]", e.WouldTriggerImmediately),
        (110094, "Order does not meet minimum order value 5USDT", e.BelowMinimum),
    ],
)
def test_bybit_codes_are_classified_by_what_the_engine_does(
    code: int | str, msg: str, expected: type
) -> None:
    failure = e.classify(bybit_error(code, msg))
    assert type(failure) is expected
    assert failure.code == int(code)


def test_a_bybit_internal_error_on_a_create_is_an_unknown_outcome() -> None:
    exc = bybit_error(10016, "Internal system error.")
    assert type(e.classify(exc, mutating=True)) is e.OutcomeUnknown
    assert type(e.classify(exc)) is e.VenueUnavailable


def test_bybit_ip_limit_403_is_rate_limited() -> None:
    exc = ccxt.RateLimitExceeded("bybit POST /v5/order/create 403 Forbidden access too frequent")
    assert type(e.classify(exc)) is e.RateLimited


@pytest.fixture
def bybit_adapter() -> ExchangeAdapter:
    client = build_exchange("paper", url="http://127.0.0.1:1", paper_dialect="bybit")
    market = {
        "id": "BTCUSDT",
        "symbol": "BTC/USDT:USDT",
        "base": "BTC",
        "quote": "USDT",
        "settle": "USDT",
        "type": "swap",
        "spot": False,
        "swap": True,
        "linear": True,
        "inverse": False,
        "contract": True,
        "active": True,
        "contractSize": 1,
        "precision": {"amount": 0.001, "price": 0.1},
        "limits": {"amount": {"min": 0.001, "max": 1000}, "cost": {"min": 5}},
        "info": {"lotSizeFilter": {"maxMktOrderQty": "120"}},
    }
    client.set_markets([market])
    return ExchangeAdapter(client, "bybit")


def raw_order(**info: Any) -> dict[str, Any]:
    row = {
        "orderId": "abc",
        "orderLinkId": "v1-t-s0",
        "symbol": "BTCUSDT",
        "side": "Sell",
        "orderType": "Market",
        "qty": "0.01",
        "price": "0",
        "orderStatus": "Untriggered",
        "stopOrderType": "Stop",
        "triggerPrice": "58800",
        "triggerDirection": 2,
        "reduceOnly": True,
        "closeOnTrigger": True,
        "positionIdx": 0,
        "tpslMode": "",
        "cumExecQty": "0",
        "createdTime": "1700000000000",
    }
    row.update(info)
    return row


def parse(adapter: ExchangeAdapter, row: dict[str, Any]) -> Any:
    dialect = adapter.dialect
    assert isinstance(dialect, BybitDialect)
    return dialect.parse_order(adapter.client.parse_order(row), None)


def test_a_conditional_sell_falling_is_a_reduce_only_stop_loss(
    bybit_adapter: ExchangeAdapter,
) -> None:
    order = parse(bybit_adapter, raw_order())
    assert (order.type, order.status, order.symbol) == ("stop_market", "open", "BTCUSDT")
    assert order.trigger_price == Decimal("58800") and order.amount == Decimal("0.01")
    assert order.reduce_only and order.close_on_trigger and not order.close_position
    domain = order.to_domain()
    assert domain.is_stop_loss and domain.is_closing and domain.close_on_trigger


def test_a_sell_rising_is_a_take_profit_not_a_stop(bybit_adapter: ExchangeAdapter) -> None:
    order = parse(bybit_adapter, raw_order(triggerDirection=1))
    assert order.type == "take_profit_market"
    assert not order.to_domain().is_stop_loss


def test_a_position_stop_loss_with_quantity_zero_closes_the_whole_position(
    bybit_adapter: ExchangeAdapter,
) -> None:
    order = parse(
        bybit_adapter, raw_order(stopOrderType="StopLoss", qty="0", orderLinkId="", tpslMode="Full")
    )
    assert order.close_position and order.client_id is None and order.amount == 0
    assert order.to_domain().is_stop_loss


def test_plain_orders_and_bybit_statuses(bybit_adapter: ExchangeAdapter) -> None:
    filled = parse(
        bybit_adapter,
        raw_order(
            stopOrderType="",
            triggerPrice="0",
            triggerDirection=0,
            orderStatus="Filled",
            cumExecQty="0.01",
            avgPrice="60000",
            reduceOnly=False,
            closeOnTrigger=False,
        ),
    )
    assert (filled.type, filled.status, filled.conditional) == ("market", "closed", False)
    assert filled.is_filled and filled.average == Decimal(60000)
    deactivated = parse(bybit_adapter, raw_order(orderStatus="Deactivated"))
    assert deactivated.status == "canceled" and not deactivated.is_open
    unknown = parse(bybit_adapter, raw_order(stopOrderType="UNKNOWN", triggerPrice="0"))
    assert not unknown.conditional


@pytest.mark.parametrize(
    ("hedge", "side", "reduce_only", "idx"),
    [
        (False, "buy", False, 0),
        (False, "sell", True, 0),
        (True, "buy", False, 1),  # opens the long slot
        (True, "sell", True, 1),  # closes the long slot (its stop, its close)
        (True, "sell", False, 2),  # opens the short slot
        (True, "buy", True, 2),  # closes the short slot
    ],
)
def test_position_index_follows_the_account_mode(
    bybit_adapter: ExchangeAdapter, hedge: bool, side: str, reduce_only: bool, idx: int
) -> None:
    dialect = bybit_adapter.dialect
    assert isinstance(dialect, BybitDialect)
    dialect._hedge = hedge  # as learned from the position list
    assert dialect.position_idx("BTCUSDT", side, reduce_only) == idx


def test_bybit_market_order_maximum_bounds_the_rules(bybit_adapter: ExchangeAdapter) -> None:
    rules = bybit_adapter.rules("BTCUSDT")
    assert (rules.tick_size, rules.step_size, rules.max_qty) == (
        Decimal("0.1"),
        Decimal("0.001"),
        Decimal(120),
    )
    assert rules.min_notional == Decimal(5)


def test_the_dialect_follows_the_client() -> None:
    binance = build_exchange("paper", url="http://127.0.0.1:1")
    bybit = build_exchange("bybit")
    assert dialect_for(binance) is BinanceDialect and dialect_for(bybit) is BybitDialect
    assert bybit.options["fetchMarkets"]["types"] == ["linear"]
    assert bybit.has["fetchCurrencies"] is False


def test_paper_bybit_points_rest_and_streams_at_the_simulator() -> None:
    from core.exchange.factory import build_pro_exchange

    client = build_pro_exchange("paper", url="http://127.0.0.1:9", paper_dialect="bybit")
    api = client.urls["api"]
    assert api["private"] == api["public"] == "http://127.0.0.1:9"
    assert api["ws"]["public"]["linear"] == "ws://127.0.0.1:9/v5/public/linear"
    assert api["ws"]["private"]["contract"] == "ws://127.0.0.1:9/v5/private"
    with pytest.raises(ValueError, match="paper dialect"):
        build_exchange("paper", url="http://127.0.0.1:9", paper_dialect="okx")
