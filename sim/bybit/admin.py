"""Admin API of a Bybit instance: the same `/_sim/...` paths as the Binance dialect.

Dialect-neutral routes (prices, paths, volatility, ticks, faults, request log, WebSocket
control) are `sim.admin`'s own handlers, which work on `BybitState` as on `SimState`. The
routes that touch the account are re-implemented here in Bybit's terms: `positionIdx` for
hedge mode, Bybit-shaped rows in `/_sim/state`, and the dialect's knobs in `/_sim/config`
(`position_delay_ms`, `order_rate_limit`, `realtime_closed_window`, `retcode_as_string`,
`max_stop_orders`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp import web

from sim import admin, errors
from sim.admin import _body, _decimal, _positive, _side, _symbol, _wrap
from sim.bybit import views
from sim.bybit.engine import BybitEngine
from sim.bybit.records import FALLING, RISING, OrderIntent
from sim.bybit.state import BybitState
from sim.matching import now_ms
from sim.orders import fmt

SIDES = {"BUY": "Buy", "SELL": "Sell"}


def _idx(engine: BybitEngine, body: dict[str, Any], side: str) -> int:
    raw = body.get("positionIdx")
    if raw is None:
        return (1 if side == "Buy" else 2) if engine.hedge else 0
    if not isinstance(raw, int):
        raise errors.illegal("positionIdx")
    return raw


async def open_position(request: web.Request, state: BybitState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    side = SIDES[_side(body)]
    qty = _positive(_decimal(body, "quantity"), "quantity")
    engine = state.engine
    order = engine.force_fill(symbol, side, qty, _idx(engine, body, side))
    return order.to_api()


async def close_position(request: web.Request, state: BybitState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    idx = body.get("positionIdx")
    if idx is not None and not isinstance(idx, int):
        raise errors.illegal("positionIdx")
    orders = state.engine.close_by_hand(symbol, idx)
    return {"closed": bool(orders), "orders": [o.to_api() for o in orders]}


async def manual_order(request: web.Request, state: BybitState) -> Any:
    """An order as if placed by hand in Bybit's UI (same validation as the API).

    Fields: symbol, side, `orderType` (Market/Limit, or `type`), `qty` (or `quantity`),
    price, triggerPrice (+ triggerDirection, default: the side's stop direction),
    triggerBy, reduceOnly, closeOnTrigger, positionIdx, orderLinkId.
    """
    body = await _body(request)
    engine = state.engine
    side = SIDES[_side(body)]
    order_type = str(body.get("orderType") or body.get("type") or "Market").capitalize()
    trigger = _decimal(body, "triggerPrice", required=False)
    qty = _decimal(body, "qty", required=False) or _decimal(body, "quantity", required=False)
    direction = body.get("triggerDirection")
    if trigger is not None and direction is None:
        direction = RISING if side == "Buy" else FALLING  # a stop: buy above, sell below
    intent = OrderIntent(
        symbol=_symbol(state, body),
        side=side,
        order_type=order_type,
        qty=qty or Decimal(0),
        position_idx=_idx(engine, body, side),
        price=_decimal(body, "price", required=False),
        link_id=str(body.get("orderLinkId") or body.get("clientOrderId") or ""),
        reduce_only=bool(body.get("reduceOnly", False)),
        close_on_trigger=bool(body.get("closeOnTrigger", False)),
        trigger_price=trigger,
        trigger_direction=int(direction or 0),
        trigger_by=str(body.get("triggerBy", "MarkPrice")),
    )
    return engine.place(intent).to_api()


_INT_KNOBS = ("position_delay_ms", "realtime_closed_window", "max_stop_orders")


async def configure(request: web.Request, state: BybitState) -> Any:
    body = await _body(request)
    config = state.engine.config
    for key in ("taker_fee", "maker_fee", "slippage_bps"):
        value = _decimal(body, key, required=False)
        if value is not None:
            setattr(config, key, value)
    knobs = state.settings
    for key in _INT_KNOBS:
        if key in body:
            if not isinstance(body[key], int) or body[key] < 0:
                raise errors.illegal(key)
            setattr(knobs, key, body[key])
    if "order_rate_limit" in body:
        limit = body["order_rate_limit"]
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise errors.illegal("order_rate_limit")
        knobs.order_rate_limit = limit
    if "retcode_as_string" in body:
        knobs.retcode_as_string = bool(body["retcode_as_string"])
    return _config(state)


def _config(state: BybitState) -> dict[str, Any]:
    config, knobs = state.engine.config, state.settings
    return {
        "dialect": "bybit",
        "taker_fee": fmt(config.taker_fee),
        "maker_fee": fmt(config.maker_fee),
        "slippage_bps": fmt(config.slippage_bps),
        "position_delay_ms": knobs.position_delay_ms,
        "order_rate_limit": knobs.order_rate_limit,
        "realtime_closed_window": knobs.realtime_closed_window,
        "retcode_as_string": knobs.retcode_as_string,
        "max_stop_orders": knobs.max_stop_orders,
        "tick_interval": state.options.tick_interval,
        "seed": state.options.seed,
    }


def _positions(engine: BybitEngine) -> list[dict[str, Any]]:
    """Every open slot as the matching engine knows it, visible in the list or not yet."""
    now = now_ms()
    rows = []
    for pos in engine.positions.values():
        if pos.amount:
            row = views.position_row(engine, pos, ws=True)
            row["visible"] = pos.visible(now)
            rows.append(row)
    return rows


async def get_state(request: web.Request, state: BybitState) -> Any:
    engine = state.engine
    return {
        "dialect": "bybit",
        "wallet": fmt(engine.wallet),
        "available": fmt(engine.available()),
        "position_mode": "hedge" if engine.hedge else "one_way",
        "margin_mode": engine.margin_mode,
        "positions": _positions(engine),
        "open_orders": [o.to_api() for o in engine.open_orders()],
    }


async def snapshot(request: web.Request, state: BybitState) -> Any:
    engine = state.engine
    base = await get_state(request, state)
    base.update(
        prices={s: fmt(p) for s, p in state.prices.prices.items()},
        ticks=state.prices.ticks,
        orders=[o.to_api() for o in engine.orders.values()],
        trades=[e.to_api() for e in engine.executions],
        faults=state.faults.describe(),
        config=_config(state),
    )
    return base


OVERRIDES = {
    ("POST", "/_sim/open_position"): open_position,
    ("POST", "/_sim/close_position"): close_position,
    ("POST", "/_sim/order"): manual_order,
    ("POST", "/_sim/reset"): admin.reset,
    ("POST", "/_sim/config"): configure,
    ("POST", "/_sim/keys"): admin.set_keys,
    ("GET", "/_sim/state"): get_state,
    ("GET", "/_sim/snapshot"): snapshot,
}


def register(app: web.Application) -> None:
    """Every admin path of the Binance dialect, the account ones answered in Bybit terms."""
    for method, path, handler in admin.ADMIN_ROUTES:
        app.router.add_route(method, path, _wrap(OVERRIDES.get((method, path), handler)))
