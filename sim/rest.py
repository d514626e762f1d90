"""Binance USD-M REST endpoints (`/fapi/v1`, `/fapi/v2`, `/fapi/v3`) of the paper exchange.

Only what ccxt's binanceusdm calls for the engine's methods, answered in the shapes its
parsers read (see ccxt/binance.py: parse_order, parse_position_risk, parse_balance_custom,
parse_market, parse_ticker, parse_trade). Parameter errors answer Binance's own codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sim import errors, market_data, views
from sim.errors import SimError
from sim.orders import CONDITIONAL_TYPES, OrderRequest, fmt
from sim.rest_context import Ctx

_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
SIDES = frozenset({"BUY", "SELL"})
WORKING_TYPES = frozenset({"MARK_PRICE", "CONTRACT_PRICE"})
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})


Handler = Callable[[Ctx], Any]


# -- account ----------------------------------------------------------------------------


def account(ctx: Ctx) -> Any:
    engine = ctx.state.engine
    asset = views.account_assets(engine)
    positions = [
        views.position_risk(engine, p, 3) for p in engine.positions.values() if p.amount != 0
    ]
    return {
        "totalInitialMargin": asset["initialMargin"],
        "totalMaintMargin": asset["maintMargin"],
        "totalWalletBalance": asset["walletBalance"],
        "totalUnrealizedProfit": asset["unrealizedProfit"],
        "totalMarginBalance": asset["marginBalance"],
        "totalPositionInitialMargin": asset["positionInitialMargin"],
        "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"],
        "totalCrossWalletBalance": asset["crossWalletBalance"],
        "totalCrossUnPnl": asset["crossUnPnl"],
        "availableBalance": asset["availableBalance"],
        "maxWithdrawAmount": asset["maxWithdrawAmount"],
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "feeTier": 0,
        "multiAssetsMargin": False,
        "updateTime": 0,
        "assets": [asset],
        "positions": positions,
    }


def balance(ctx: Ctx) -> Any:
    asset = views.account_assets(ctx.state.engine)
    return [
        {
            "accountAlias": "SgsR",
            "asset": "USDT",
            "balance": asset["walletBalance"],
            "crossWalletBalance": asset["crossWalletBalance"],
            "crossUnPnl": asset["crossUnPnl"],
            "availableBalance": asset["availableBalance"],
            "maxWithdrawAmount": asset["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": asset["updateTime"],
        }
    ]


def _position_risk(ctx: Ctx, version: int) -> Any:
    engine = ctx.state.engine
    symbol = ctx.optional_symbol()
    names = [symbol] if symbol else list(ctx.state.markets)
    rows = []
    for name in names:
        pos = engine.position(name)
        if version == 3 and not pos.amount and not engine.open_orders(name) and not symbol:
            continue  # v3 lists only symbols with a position or open orders
        rows.append(views.position_risk(engine, pos, version))
    return rows


def position_risk_v2(ctx: Ctx) -> Any:
    return _position_risk(ctx, 2)


def position_risk_v3(ctx: Ctx) -> Any:
    return _position_risk(ctx, 3)


def leverage_bracket(ctx: Ctx) -> Any:
    rows = []
    for symbol in market_data.symbols_or_all(ctx):
        market = ctx.state.markets[symbol]
        rows.append(
            {
                "symbol": symbol,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": market.max_leverage,
                        "notionalCap": 1_000_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    },
                    {
                        "bracket": 2,
                        "initialLeverage": 10,
                        "notionalCap": 50_000_000,
                        "notionalFloor": 1_000_000,
                        "maintMarginRatio": 0.025,
                        "cum": 21000.0,
                    },
                ],
            }
        )
    return rows[0] if ctx.params.get("symbol") else rows


def commission_rate(ctx: Ctx) -> Any:
    config = ctx.state.engine.config
    return {
        "symbol": ctx.symbol(),
        "makerCommissionRate": fmt(config.maker_fee),
        "takerCommissionRate": fmt(config.taker_fee),
    }


def set_leverage(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    leverage = ctx.integer("leverage")
    if leverage is None:
        raise errors.missing("leverage")
    pos = ctx.state.engine.set_leverage(symbol, leverage)
    return {"leverage": pos.leverage, "maxNotionalValue": "1000000", "symbol": symbol}


def set_margin_type(ctx: Ctx) -> Any:
    ctx.state.engine.set_margin_type(ctx.symbol(), ctx.text("marginType"))
    return {"code": 200, "msg": "success"}


def get_dual_side(ctx: Ctx) -> Any:
    return {"dualSidePosition": ctx.state.engine.dual_side}


def set_dual_side(ctx: Ctx) -> Any:
    raw = ctx.text("dualSidePosition").lower()
    if raw not in ("true", "false"):
        raise SimError(-1116, "Invalid dualSidePosition.")
    ctx.state.engine.set_dual_side(raw == "true")
    return {"code": 200, "msg": "success"}


# -- orders -----------------------------------------------------------------------------


def _order_request(ctx: Ctx, *, algo: bool) -> OrderRequest:
    symbol = ctx.symbol()
    side = ctx.text("side").upper()
    if side not in SIDES:
        raise errors.BAD_SIDE
    order_type = ctx.text("type").upper()
    client_key = "clientAlgoId" if algo else "newClientOrderId"
    client_id = ctx.params.get(client_key, "")
    if client_id and not _CLIENT_ID.match(client_id):
        raise errors.BAD_CLIENT_ID
    working_type = ctx.params.get("workingType", "CONTRACT_PRICE").upper()
    if working_type not in WORKING_TYPES:
        raise SimError(-1116, "Invalid workingType.")
    tif = ctx.params.get("timeInForce", "GTC").upper()
    if tif not in TIME_IN_FORCE:
        raise SimError(-1115, "Invalid timeInForce.")
    quantity = ctx.decimal("quantity")
    trigger = ctx.decimal("triggerPrice") if algo else ctx.decimal("stopPrice")
    return OrderRequest(
        symbol=symbol,
        side=side,
        type=order_type,
        quantity=quantity if quantity is not None else Decimal(0),
        price=ctx.decimal("price"),
        trigger_price=trigger,
        reduce_only=ctx.flag("reduceOnly"),
        close_position=ctx.flag("closePosition"),
        time_in_force=tif,
        working_type=working_type,
        client_id=client_id,
        position_side=ctx.params.get("positionSide", "BOTH").upper(),
        price_protect=ctx.flag("priceProtect"),
    )


def new_order(ctx: Ctx) -> Any:
    req = _order_request(ctx, algo=False)
    if req.type in CONDITIONAL_TYPES:
        raise errors.USE_ALGO
    if req.type != "LIMIT" and req.price is not None:
        raise errors.not_required("price")
    if req.type == "MARKET" and "quantity" not in ctx.params:
        raise errors.missing("quantity")
    engine = ctx.state.engine
    order = ctx.plan.place_with_fill_faults(
        req.type == "MARKET",
        lambda defer, fraction: engine.place_order(req, defer_fill=defer, fill_fraction=fraction),
        ctx.state.schedule,
        engine.fill_deferred,
    )
    return order.to_api()


def _reference(ctx: Ctx, id_param: str, client_param: str) -> tuple[int | None, str | None]:
    """An order named by the exchange's id or by the client's; Binance wants one of the two."""
    order_id = ctx.integer(id_param)
    client_id = ctx.params.get(client_param) or None
    if order_id is None and client_id is None:
        raise SimError(
            -1102, f"Param '{client_param}' or '{id_param}' must be sent, but both were empty/null!"
        )
    return order_id, client_id


def _order_ref(ctx: Ctx) -> tuple[int | None, str | None]:
    return _reference(ctx, "orderId", "origClientOrderId")


def query_order(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    order_id, client_id = _order_ref(ctx)
    return ctx.state.engine.find_order(symbol, order_id, client_id).to_api()


def query_open_order(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    order_id, client_id = _order_ref(ctx)
    order = ctx.state.engine.find_order(symbol, order_id, client_id)
    if not order.is_open:
        raise SimError(-2013, "Order does not exist.")
    return order.to_api()


def cancel_order(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    order_id, client_id = _order_ref(ctx)
    return ctx.state.engine.cancel_order(symbol, order_id, client_id).to_api()


def open_orders(ctx: Ctx) -> Any:
    return [o.to_api() for o in ctx.state.engine.open_orders(ctx.optional_symbol())]


def _window(ctx: Ctx) -> tuple[int, int, int]:
    start = ctx.integer("startTime") or 0
    end = ctx.integer("endTime") or 2**63
    limit = min(ctx.integer("limit") or 500, 1000)
    return start, end, limit


def all_orders(ctx: Ctx) -> Any:
    return _symbol_history(ctx, ctx.state.engine.ledger.orders.values(), lambda o: o.time)


def _symbol_history(ctx: Ctx, rows: Iterable[Any], time_of: Callable[[Any], int]) -> Any:
    """The newest ``limit`` of one symbol's orders (plain or algo) in the time window."""
    symbol = ctx.symbol()
    start, end, limit = _window(ctx)
    return [r.to_api() for r in rows if r.symbol == symbol and start <= time_of(r) <= end][-limit:]


CANCEL_ALL_DONE = {"code": 200, "msg": "The operation of cancel all open order is done."}


def cancel_all_orders(ctx: Ctx) -> Any:
    ctx.state.engine.cancel_all(ctx.symbol())
    return dict(CANCEL_ALL_DONE)


def user_trades(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    start, end, limit = _window(ctx)
    from_id = ctx.integer("fromId")
    rows = [
        f.to_api()
        for f in ctx.state.engine.ledger.fills
        if f.symbol == symbol
        and start <= f.time <= end
        and (from_id is None or f.trade_id >= from_id)
    ]
    return rows[:limit] if from_id is not None else rows[-limit:]


# -- algo (conditional) orders ----------------------------------------------------------


def new_algo_order(ctx: Ctx) -> Any:
    algo_type = ctx.text("algoType").upper()
    if algo_type != "CONDITIONAL":
        raise SimError(-1116, "Invalid algoType.")
    req = _order_request(ctx, algo=True)
    if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
        raise errors.BAD_ORDER_TYPE
    return ctx.state.engine.place_algo(req).to_api()


def _algo_ref(ctx: Ctx) -> tuple[int | None, str | None]:
    return _reference(ctx, "algoId", "clientAlgoId")


def query_algo_order(ctx: Ctx) -> Any:
    algo_id, client_id = _algo_ref(ctx)
    return ctx.state.engine.find_algo(algo_id, client_id).to_api()


def cancel_algo_order(ctx: Ctx) -> Any:
    algo_id, client_id = _algo_ref(ctx)
    algo = ctx.state.engine.cancel_algo(algo_id, client_id)
    return {
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "code": "200",
        "msg": "success",
    }


def open_algo_orders(ctx: Ctx) -> Any:
    return [a.to_api() for a in ctx.state.engine.open_algo_orders(ctx.optional_symbol())]


def all_algo_orders(ctx: Ctx) -> Any:
    algo_orders = ctx.state.engine.ledger.algo_orders.values()
    return _symbol_history(ctx, algo_orders, lambda a: a.create_time)


def cancel_all_algo_orders(ctx: Ctx) -> Any:
    ctx.state.engine.cancel_all_algo(ctx.symbol())
    return dict(CANCEL_ALL_DONE)


# -- user data stream -------------------------------------------------------------------


def create_listen_key(ctx: Ctx) -> Any:
    return {"listenKey": ctx.state.new_listen_key()}


def keepalive_listen_key(ctx: Ctx) -> Any:
    key = ctx.params.get("listenKey")
    if key and key not in ctx.state.listen_keys:
        raise errors.BAD_LISTEN_KEY
    if not key:
        key = next(iter(ctx.state.listen_keys), None) or ctx.state.new_listen_key()
    return {"listenKey": key}


def delete_listen_key(ctx: Ctx) -> Any:
    key = ctx.params.get("listenKey")
    if key:
        ctx.state.listen_keys.discard(key)
    return {}


PUBLIC, USER_STREAM, SIGNED = "public", "user_stream", "signed"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    security: str


ROUTES: tuple[Route, ...] = (
    Route("GET", "/fapi/v1/ping", market_data.ping, PUBLIC),
    Route("GET", "/fapi/v1/time", market_data.server_time, PUBLIC),
    Route("GET", "/fapi/v1/exchangeInfo", market_data.exchange_info, PUBLIC),
    Route("GET", "/fapi/v1/premiumIndex", market_data.premium_index, PUBLIC),
    Route("GET", "/fapi/v1/ticker/24hr", market_data.ticker_24hr, PUBLIC),
    Route("GET", "/fapi/v1/ticker/price", market_data.ticker_price, PUBLIC),
    Route("GET", "/fapi/v2/ticker/price", market_data.ticker_price, PUBLIC),
    Route("GET", "/fapi/v1/ticker/bookTicker", market_data.book_ticker, PUBLIC),
    Route("GET", "/fapi/v1/depth", market_data.depth, PUBLIC),
    Route("GET", "/fapi/v2/account", account, SIGNED),
    Route("GET", "/fapi/v3/account", account, SIGNED),
    Route("GET", "/fapi/v2/balance", balance, SIGNED),
    Route("GET", "/fapi/v3/balance", balance, SIGNED),
    Route("GET", "/fapi/v2/positionRisk", position_risk_v2, SIGNED),
    Route("GET", "/fapi/v3/positionRisk", position_risk_v3, SIGNED),
    Route("GET", "/fapi/v1/leverageBracket", leverage_bracket, SIGNED),
    Route("GET", "/fapi/v1/commissionRate", commission_rate, SIGNED),
    Route("POST", "/fapi/v1/leverage", set_leverage, SIGNED),
    Route("POST", "/fapi/v1/marginType", set_margin_type, SIGNED),
    Route("GET", "/fapi/v1/positionSide/dual", get_dual_side, SIGNED),
    Route("POST", "/fapi/v1/positionSide/dual", set_dual_side, SIGNED),
    Route("POST", "/fapi/v1/order", new_order, SIGNED),
    Route("GET", "/fapi/v1/order", query_order, SIGNED),
    Route("DELETE", "/fapi/v1/order", cancel_order, SIGNED),
    Route("GET", "/fapi/v1/openOrder", query_open_order, SIGNED),
    Route("GET", "/fapi/v1/openOrders", open_orders, SIGNED),
    Route("GET", "/fapi/v1/allOrders", all_orders, SIGNED),
    Route("DELETE", "/fapi/v1/allOpenOrders", cancel_all_orders, SIGNED),
    Route("GET", "/fapi/v1/userTrades", user_trades, SIGNED),
    Route("POST", "/fapi/v1/algoOrder", new_algo_order, SIGNED),
    Route("GET", "/fapi/v1/algoOrder", query_algo_order, SIGNED),
    Route("DELETE", "/fapi/v1/algoOrder", cancel_algo_order, SIGNED),
    Route("GET", "/fapi/v1/openAlgoOrders", open_algo_orders, SIGNED),
    Route("GET", "/fapi/v1/allAlgoOrders", all_algo_orders, SIGNED),
    Route("DELETE", "/fapi/v1/algoOpenOrders", cancel_all_algo_orders, SIGNED),
    Route("POST", "/fapi/v1/listenKey", create_listen_key, USER_STREAM),
    Route("PUT", "/fapi/v1/listenKey", keepalive_listen_key, USER_STREAM),
    Route("DELETE", "/fapi/v1/listenKey", delete_listen_key, USER_STREAM),
)
