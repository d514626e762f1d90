"""Bybit v5 error answers: HTTP 200 with `{"retCode": N, "retMsg": ..., "result": {}}`.

Codes and messages are Bybit's own (ccxt's `bybit.exceptions['exact']` maps the codes to
its classes, and the engine classifies by code and, for the catch-all 10001, by message).
`BybitError` is a `SimError`, so the dialect-neutral admin handlers that catch `SimError`
work unchanged on a Bybit instance.
"""

from __future__ import annotations

import time
from decimal import Decimal

from sim.errors import SimError
from sim.orders import fmt


def envelope(result: object, code: int = 0, msg: str = "OK") -> dict[str, object]:
    """Bybit's response envelope (success or failure)."""
    return {
        "retCode": code,
        "retMsg": msg,
        "result": result,
        "retExtInfo": {},
        "time": int(time.time() * 1000),
    }


class BybitError(SimError):
    """An error answer exactly as Bybit sends it (HTTP 200 unless said otherwise)."""

    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        super().__init__(code, msg, status)

    def body(self) -> dict[str, object]:
        return envelope({}, self.code, self.msg)


def params(detail: str) -> BybitError:
    return BybitError(10001, f"params error: {detail}")


def missing(name: str) -> BybitError:
    return BybitError(10001, f"Missing some parameters that must be filled in: {name}")


SYMBOL_INVALID = params("symbol invalid")
CATEGORY_INVALID = params("category only support linear")
SIDE_INVALID = params("side invalid")
ORDER_TYPE_INVALID = params("orderType invalid")
QTY_MIN = BybitError(10001, "The number of contracts exceeds minimum limit allowed")
QTY_MAX = BybitError(10001, "The number of contracts exceeds maximum limit allowed")
QTY_STEP = BybitError(10001, "Qty invalid: qty must be a multiple of qtyStep")
PRICE_TICK = params("price invalid: price must be a multiple of tickSize")
IDX_MISMATCH = BybitError(10001, "position idx not match position mode")
TRIGGER_DIRECTION = params("triggerDirection invalid")
TRIGGER_BY = params("triggerBy invalid")
LINK_ID_INVALID = params("orderLinkId invalid")
ZERO_POSITION_TPSL = BybitError(10001, "can not set tp/sl/ts for zero position")
SETTLE_REQUIRED = missing("symbol or settleCoin or baseCoin")
CURSOR_INVALID = params("cursor invalid")
API_KEY = BybitError(10003, "API key is invalid.")
TIMESTAMP = BybitError(
    10002, "invalid request, please check your server timestamp or recv_window param"
)
RATE_LIMIT = BybitError(10006, "Too many visits!")
SYSTEM = BybitError(10016, "Internal system error.")
PATH_NOT_FOUND = BybitError(10017, "request path not found or request method is invalid", 404)
ORDER_NOT_FOUND = BybitError(110001, "order not exists or too late to cancel")
BALANCE = BybitError(110007, "ab not enough for new order")
TOO_MANY_STOPS = BybitError(110009, "The number of stop orders exceeds maximum limit allowed")
REDUCE_ONLY_ZERO = BybitError(110017, "current position is zero, cannot fix reduce-only order qty")
REDUCE_ONLY_SIDE = BybitError(110017, "Reduce-only rule not satisfied")
REDUCTION_ONLY_CONTRACT = BybitError(
    110023,
    "This contract only supports position reduction operation, "
    "please contact customer service for details",
)
MODE_HAS_POSITION = BybitError(
    110024, "You have an existing position, so position mode cannot be switched"
)
MODE_UNCHANGED = BybitError(110025, "Position mode is not modified")
MODE_HAS_ORDERS = BybitError(110028, "Open orders exist, so you cannot change position mode")
LEVERAGE_UNCHANGED = BybitError(110043, "Set leverage not modified")
DUPLICATE_LINK_ID = BybitError(110072, "OrderLinkedID is duplicate")
NOT_MODIFIED = BybitError(34040, "Not modified")
MARGIN_MODE_FAILED = BybitError(3400045, "Set margin mode failed")


def sign_error(origin: str) -> BybitError:
    return BybitError(10004, f"error sign! origin_string[{origin}]")


def leverage_invalid(name: str) -> BybitError:
    return params(f"{name} invalid")


def would_trigger(rising: bool, trigger: Decimal, current: Decimal) -> BybitError:
    """110092 / 110093: a conditional order whose trigger is already crossed."""
    if rising:
        return BybitError(
            110092, f"expect Rising, but trigger_price[{fmt(trigger)}] <= current[{fmt(current)}]"
        )
    return BybitError(
        110093, f"expect Falling, but trigger_price[{fmt(trigger)}] >= current[{fmt(current)}]"
    )


def below_min_value(value: Decimal) -> BybitError:
    return BybitError(110094, f"Order does not meet minimum order value {fmt(value)}USDT")


def stop_loss_side(position_side: str, stop: Decimal, base: Decimal) -> BybitError:
    """trading-stop: a stop-loss on the wrong side of the current price."""
    relation = "lower" if position_side == "Buy" else "higher"
    return BybitError(
        10001,
        f"StopLoss:{fmt(stop)} set for {position_side} position should {relation} "
        f"than base_price:{fmt(base)}??MarkPrice",
    )
