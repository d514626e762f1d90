"""Bybit v5 REST endpoints of the paper exchange (category `linear`, UTA account).

Only what ccxt's `bybit` calls for the engine's operations, answered in the shapes its
parsers read (see ccxt/bybit.py: fetch_future_markets, parse_ticker, parse_balance,
parse_position, parse_order, parse_trade, is_unified_enabled). GET parameters come from the
query string, POST parameters from the JSON body; numbers may arrive as strings or JSON
numbers, flags as booleans or "true"/"false", as Bybit accepts them.

Lists are cursor-paginated like Bybit's: newest first, `limit` bounded per endpoint (open
orders: at most 50 a page) and an opaque `nextPageCursor` ("" on the last page).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from sim.bybit import errors, views
from sim.bybit.market_data import instrument_row, instrument_status, ticker_row
from sim.bybit.records import BybitOrder, OrderIntent
from sim.bybit.state import BybitState
from sim.faults import FaultPlan
from sim.matching import now_ms

T = TypeVar("T")
_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_CURSOR = re.compile(r"^page_args=(\d+)$")
WEEK_MS = 7 * 24 * 3600 * 1000
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "PostOnly"})


@dataclass
class Call:
    """One request: the state, its parameters and the faults that fired on it."""

    state: BybitState
    params: dict[str, Any]
    plan: FaultPlan

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.params.get(name)
        if value is None or value == "":
            if required:
                raise errors.missing(name)
            return None
        return str(value)

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation as exc:
            raise errors.params(f"{name} invalid") from exc
        if not value.is_finite():
            raise errors.params(f"{name} invalid")
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        if not re.fullmatch(r"-?\d{1,19}", raw):
            raise errors.params(f"{name} invalid")
        return int(raw)

    def flag(self, name: str) -> bool:
        value = self.params.get(name, False)
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1"):
            return True
        if str(value).lower() in ("false", "0", ""):
            return False
        raise errors.params(f"{name} invalid")

    def linear(self) -> None:
        if self.params.get("category") != "linear":
            raise errors.CATEGORY_INVALID

    def other_category(self) -> bool:
        """A read of another product (inverse, spot, option): the account holds nothing
        there, so lists answer empty (ccxt.pro's position snapshot asks for inverse too)."""
        category = self.params.get("category")
        if category in ("inverse", "spot", "option"):
            return True
        self.linear()
        return False

    def symbol(self) -> str:
        symbol = (self.text("symbol", required=True) or "").upper()
        self.state.engine.market(symbol)
        return symbol

    def scope(self, *, required: bool) -> set[str] | None:
        """symbol / baseCoin / settleCoin: which symbols a list covers (None: all)."""
        if self.text("symbol"):
            return {self.symbol()}
        base = self.text("baseCoin")
        if base:
            return {s for s, m in self.state.markets.items() if m.base == base.upper()}
        settle = self.text("settleCoin")
        if settle:
            return None if settle.upper() == "USDT" else set()
        if required:
            raise errors.SETTLE_REQUIRED
        return None

    def limit(self, default: int, maximum: int) -> int:
        limit = self.integer("limit", default)
        assert limit is not None
        if not 1 <= limit <= maximum:
            raise errors.params(f"limit invalid, should be in [1, {maximum}]")
        return limit

    def window(self) -> tuple[int, int]:
        """startTime/endTime: Bybit covers 7 days, ending now unless told otherwise."""
        start = self.integer("startTime")
        end = self.integer("endTime")
        if start is None and end is None:
            end = now_ms()
            return end - WEEK_MS, end
        if start is None:
            assert end is not None
            return end - WEEK_MS, end
        return start, end if end is not None else start + WEEK_MS


def page_by_seq(
    rows: Sequence[T], seq: Callable[[T], int], limit: int, cursor: str | None
) -> tuple[list[T], str]:
    """Newest-first rows after the cursor (the sequence number of the last row sent)."""
    if cursor:
        match = _CURSOR.match(cursor)
        if not match:
            raise errors.CURSOR_INVALID
        after = int(match.group(1))
        rows = [r for r in rows if seq(r) < after]
    chunk = list(rows[:limit])
    more = len(rows) > limit
    return chunk, f"page_args={seq(chunk[-1])}" if more and chunk else ""


def page_by_offset(rows: Sequence[T], limit: int, cursor: str | None) -> tuple[list[T], str]:
    start = 0
    if cursor:
        match = _CURSOR.match(cursor)
        if not match:
            raise errors.CURSOR_INVALID
        start = int(match.group(1))
    chunk = list(rows[start : start + limit])
    more = start + limit < len(rows)
    return chunk, f"page_args={start + limit}" if more else ""


# -- market data and account info ----------------------------------------------------------


def market_time(call: Call) -> Any:
    now = time.time_ns()
    return {"timeSecond": str(now // 10**9), "timeNano": str(now)}


def instruments_info(call: Call) -> Any:
    category = call.text("category", required=True)
    if category != "linear":
        return {"category": category, "list": [], "nextPageCursor": ""}
    status = call.text("status") or "Trading"
    symbol = (call.text("symbol") or "").upper()
    markets = [
        m
        for m in call.state.markets.values()
        if instrument_status(m) == status and (not symbol or m.symbol == symbol)
    ]
    limit = call.limit(500, 1000)
    chunk, cursor = page_by_offset(markets, limit, call.text("cursor"))
    return {
        "category": "linear",
        "list": [instrument_row(m) for m in chunk],
        "nextPageCursor": cursor,
    }


def tickers(call: Call) -> Any:
    call.linear()
    names = [call.symbol()] if call.text("symbol") else list(call.state.markets)
    prices = call.state.prices.prices
    rows = [ticker_row(call.state.markets[s], prices[s]) for s in names]
    return {"category": "linear", "list": rows}


def query_api(call: Call) -> Any:
    return {
        "id": "1",
        "note": "paper",
        "apiKey": call.state.options.api_key,
        "readOnly": 0,
        "secret": "",
        "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
        "ips": ["*"],
        "type": 1,
        "deadlineDay": 90,
        "expiredAt": "",
        "createdAt": "2024-01-01T00:00:00Z",
        "unified": 0,
        "uta": 1,
        "userID": 1,
        "inviterID": 0,
        "vipLevel": "No VIP",
        "mktMakerLevel": "0",
        "affiliateID": 0,
        "rsaPublicKey": "",
        "isMaster": True,
    }


def account_info(call: Call) -> Any:
    return {
        "marginMode": call.state.engine.margin_mode,
        "updatedTime": str(now_ms()),
        "unifiedMarginStatus": 6,
        "dcpStatus": "OFF",
        "timeWindow": 10,
        "smpGroup": 0,
        "isMasterTrader": False,
        "spotHedgingStatus": "OFF",
    }


def coin_info(call: Call) -> Any:
    coins = sorted({"USDT", *(m.base for m in call.state.markets.values())})
    return {"rows": [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in coins]}


def wallet_balance(call: Call) -> Any:
    if call.text("accountType", required=True) != "UNIFIED":
        raise errors.params("accountType only support UNIFIED")
    return {"list": [views.wallet_row(call.state.engine)]}


# -- positions -----------------------------------------------------------------------------


def position_list(call: Call) -> Any:
    if call.other_category():
        return {"category": call.params["category"], "list": [], "nextPageCursor": ""}
    rows = views.position_rows(call.state.engine, call.scope(required=True))
    chunk, cursor = page_by_offset(rows, call.limit(20, 200), call.text("cursor"))
    return {"category": "linear", "list": chunk, "nextPageCursor": cursor}


def set_leverage(call: Call) -> Any:
    call.linear()
    buy = call.decimal("buyLeverage", required=True)
    sell = call.decimal("sellLeverage", required=True)
    assert buy is not None and sell is not None
    call.state.engine.set_leverage(call.symbol(), buy, sell)
    return {}


def switch_mode(call: Call) -> Any:
    call.linear()
    mode = call.integer("mode")
    if mode not in (0, 3):
        raise errors.params("mode invalid")
    symbol = call.symbol() if call.text("symbol") else None
    if symbol is None and (call.text("coin") or "").upper() != "USDT":
        raise errors.missing("symbol or coin")
    call.state.engine.switch_mode(symbol, hedge=mode == 3)
    return {}


def set_margin_mode(call: Call) -> Any:
    mode = call.text("setMarginMode", required=True) or ""
    return {"reasons": call.state.engine.set_margin_mode(mode)}


def trading_stop(call: Call) -> Any:
    call.linear()
    symbol = call.symbol()
    mode = call.text("tpslMode") or "Full"
    if mode != "Full":
        raise errors.params("tpslMode Partial is not simulated (Full only)")
    idx = call.integer("positionIdx")
    if idx is None:
        raise errors.missing("positionIdx")
    call.state.engine.trading_stop(
        symbol,
        idx,
        take_profit=call.decimal("takeProfit"),
        stop_loss=call.decimal("stopLoss"),
        tp_trigger_by=call.text("tpTriggerBy") or "LastPrice",
        sl_trigger_by=call.text("slTriggerBy") or "LastPrice",
    )
    return {}


# -- orders --------------------------------------------------------------------------------


def _intent(call: Call) -> OrderIntent:
    call.linear()
    symbol = call.symbol()
    side = call.text("side", required=True)
    if side not in ("Buy", "Sell"):
        raise errors.SIDE_INVALID
    order_type = call.text("orderType", required=True)
    if order_type not in ("Market", "Limit"):
        raise errors.ORDER_TYPE_INVALID
    link_id = call.text("orderLinkId") or ""
    if link_id and not _LINK_ID.match(link_id):
        raise errors.LINK_ID_INVALID
    tif = call.text("timeInForce") or "GTC"
    if tif not in TIME_IN_FORCE:
        raise errors.params("timeInForce invalid")
    for attached in ("takeProfit", "stopLoss"):
        if call.text(attached):
            raise errors.params(f"{attached} on the order is not simulated: use trading-stop")
    qty = call.decimal("qty", required=True)
    assert qty is not None
    trigger = call.decimal("triggerPrice")
    return OrderIntent(
        symbol=symbol,
        side=side,
        order_type=order_type,
        qty=qty,
        position_idx=call.integer("positionIdx", 0) or 0,
        price=call.decimal("price"),
        link_id=link_id,
        time_in_force=tif,
        reduce_only=call.flag("reduceOnly"),
        close_on_trigger=call.flag("closeOnTrigger"),
        trigger_price=trigger if trigger else None,
        trigger_direction=call.integer("triggerDirection", 0) or 0,
        trigger_by=call.text("triggerBy") or "LastPrice",
    )


def _ids(order: BybitOrder) -> dict[str, str]:
    return {"orderId": order.order_id, "orderLinkId": order.link_id}


def create_order(call: Call) -> Any:
    intent = _intent(call)
    engine = call.state.engine
    order = call.plan.place_with_fill_faults(
        intent.order_type == "Market" and intent.trigger_price is None,
        lambda defer, fraction: engine.place(intent, defer_fill=defer, fill_fraction=fraction),
        call.state.schedule,
        engine.fill_deferred,
    )
    return _ids(order)


def _ref(call: Call) -> tuple[str, str | None, str | None]:
    call.linear()
    symbol = call.symbol()
    order_id, link_id = call.text("orderId"), call.text("orderLinkId")
    if not order_id and not link_id:
        raise errors.missing("orderId or orderLinkId")
    return symbol, order_id, link_id


def amend_order(call: Call) -> Any:
    symbol, order_id, link_id = _ref(call)
    order = call.state.engine.amend(
        symbol,
        order_id,
        link_id,
        qty=call.decimal("qty"),
        price=call.decimal("price"),
        trigger_price=call.decimal("triggerPrice"),
        trigger_by=call.text("triggerBy"),
    )
    return _ids(order)


def cancel_order(call: Call) -> Any:
    symbol, order_id, link_id = _ref(call)
    return _ids(call.state.engine.cancel(symbol, order_id, link_id))


def cancel_all(call: Call) -> Any:
    call.linear()
    scope = call.scope(required=True)
    symbol = next(iter(scope)) if scope and len(scope) == 1 else None
    cancelled = call.state.engine.cancel_all(symbol, call.text("orderFilter"))
    if scope is not None and symbol is None:
        cancelled = [o for o in cancelled if o.symbol in scope]
    return {"list": [_ids(o) for o in cancelled], "success": "1"}


def _order_selectors(call: Call) -> dict[str, str | None]:
    """What both order queries (realtime and history) select by: an id, a link id, a kind."""
    return {
        "order_id": call.text("orderId"),
        "link_id": call.text("orderLinkId"),
        "order_filter": call.text("orderFilter"),
    }


def open_orders(call: Call) -> Any:
    """`/v5/order/realtime`: open orders (all kinds unless `orderFilter`), 50 a page."""
    if call.other_category():
        return {"category": call.params["category"], "list": [], "nextPageCursor": ""}
    rows = views.realtime(
        call.state.engine,
        call.scope(required=True),
        **_order_selectors(call),
        open_only=call.integer("openOnly", 0) or 0,
    )
    return _page(call, rows, call.limit(20, 50))


def order_history(call: Call) -> Any:
    call.linear()
    start, end = call.window()
    rows = views.history(
        call.state.engine,
        call.scope(required=False),
        **_order_selectors(call),
        order_status=call.text("orderStatus"),
        start=start,
        end=end,
    )
    return _page(call, rows, call.limit(20, 50))


def executions(call: Call) -> Any:
    call.linear()
    exec_type = call.text("execType")
    if exec_type not in (None, "Trade"):
        return {"category": "linear", "list": [], "nextPageCursor": ""}
    start, end = call.window()
    rows = views.fills(
        call.state.engine,
        call.scope(required=False),
        order_id=call.text("orderId"),
        link_id=call.text("orderLinkId"),
        start=start,
        end=end,
    )
    return _page(call, rows, call.limit(50, 100))


# -- routing -------------------------------------------------------------------------------

Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    private: bool
    #: counted against the per-UID order rate limit (10/s per endpoint)
    order_limited: bool = False


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v5/market/time", market_time, private=False),
    Route("GET", "/v5/market/instruments-info", instruments_info, private=False),
    Route("GET", "/v5/market/tickers", tickers, private=False),
    Route("GET", "/v5/user/query-api", query_api, private=True),
    Route("GET", "/v5/account/info", account_info, private=True),
    Route("GET", "/v5/asset/coin/query-info", coin_info, private=True),
    Route("GET", "/v5/account/wallet-balance", wallet_balance, private=True),
    Route("POST", "/v5/account/set-margin-mode", set_margin_mode, private=True),
    Route("GET", "/v5/position/list", position_list, private=True),
    Route("POST", "/v5/position/set-leverage", set_leverage, private=True),
    Route("POST", "/v5/position/switch-mode", switch_mode, private=True),
    Route("POST", "/v5/position/trading-stop", trading_stop, private=True, order_limited=True),
    Route("POST", "/v5/order/create", create_order, private=True, order_limited=True),
    Route("POST", "/v5/order/amend", amend_order, private=True, order_limited=True),
    Route("POST", "/v5/order/cancel", cancel_order, private=True, order_limited=True),
    Route("POST", "/v5/order/cancel-all", cancel_all, private=True, order_limited=True),
    Route("GET", "/v5/order/realtime", open_orders, private=True),
    Route("GET", "/v5/order/history", order_history, private=True),
    Route("GET", "/v5/execution/list", executions, private=True),
)


def _page(call: Call, rows: list[Any], limit: int) -> dict[str, Any]:
    """One page of a list endpoint, by sequence, with the cursor to the next."""
    chunk, cursor = page_by_seq(rows, lambda row: row.seq, limit, call.text("cursor"))
    return {"category": "linear", "list": [row.to_api() for row in chunk], "nextPageCursor": cursor}
