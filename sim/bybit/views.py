"""What the Bybit paper account shows: the order queries and the position and wallet rows.

Why apart from the engine (sim/bybit/engine.py): the engine changes the account (orders,
fills, triggers, position settings); this module only reads it, in Bybit's v5 shapes, for
the REST list endpoints, the private WebSocket topics and the admin state.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from sim.bybit.records import BybitOrder, BybitPosition, Execution
from sim.matching import now_ms
from sim.orders import ZERO, fmt

if TYPE_CHECKING:
    from sim.bybit.engine import BybitEngine

R = TypeVar("R", bound=Any)

MAINT_MARGIN_RATE = Decimal("0.005")

# -- queries ----------------------------------------------------------------------------


def realtime(
    engine: BybitEngine,
    symbols: set[str] | None,
    *,
    order_id: str | None,
    link_id: str | None,
    order_filter: str | None,
    open_only: int,
) -> list[BybitOrder]:
    """`/v5/order/realtime`: open orders, or by id also the most recent closed ones."""
    recent = set(engine.closed[-engine.settings.realtime_closed_window :])
    if order_id or link_id:
        order = engine.orders.get(order_id) if order_id else engine.by_link.get(link_id or "")
        found = [order] if order is not None else []
        rows = [o for o in found if o.is_open or o.order_id in recent]
    elif open_only == 0:
        rows = [o for o in engine.orders.values() if o.is_open]
    else:
        rows = [engine.orders[i] for i in recent]
    return _newest_first(
        o for o in rows if _asked_for(o, symbols) and matches_filter(o, order_filter)
    )


def history(
    engine: BybitEngine,
    symbols: set[str] | None,
    *,
    order_id: str | None,
    link_id: str | None,
    order_filter: str | None,
    order_status: str | None,
    start: int,
    end: int,
) -> list[BybitOrder]:
    """`/v5/order/history`: final orders (any age), newest first."""
    return _newest_first(
        o
        for o in engine.orders.values()
        if not o.is_open
        and _asked_for(o, symbols, order_id, link_id)
        and (not order_status or o.status == order_status)
        and start <= o.created <= end
        and matches_filter(o, order_filter)
    )


def fills(
    engine: BybitEngine,
    symbols: set[str] | None,
    *,
    order_id: str | None,
    link_id: str | None,
    start: int,
    end: int,
) -> list[Execution]:
    return _newest_first(
        e
        for e in engine.executions
        if _asked_for(e.order, symbols, order_id, link_id) and start <= e.time <= end
    )


# -- rows -------------------------------------------------------------------------------


def position_row(engine: BybitEngine, pos: BybitPosition, *, ws: bool = False) -> dict[str, object]:
    """A `/v5/position/list` row; a position not yet visible reads as flat."""
    shown = pos.amount if ws or pos.visible(now_ms()) else ZERO
    mark = engine.mark(pos.symbol)
    size = abs(shown)
    entry = pos.entry_price if shown else ZERO
    initial = size * mark / pos.leverage
    stop = engine.tpsl_order(pos, "StopLoss")
    take = engine.tpsl_order(pos, "TakeProfit")
    row: dict[str, object] = {
        "positionIdx": pos.position_idx,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": pos.symbol,
        "side": ("Buy" if shown > 0 else "Sell") if shown else "",
        "size": fmt(size),
        "avgPrice": fmt(entry),
        "positionValue": fmt(size * entry),
        "tradeMode": 1 if engine.margin_mode == "ISOLATED_MARGIN" else 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 2 if size else 0,
        "leverage": str(pos.leverage),
        "positionBalance": fmt(initial),
        "markPrice": fmt(mark),
        "liqPrice": "",
        "bustPrice": "",
        "positionMM": fmt(size * mark * MAINT_MARGIN_RATE),
        "positionIM": fmt(initial),
        "tpslMode": "Full",
        "takeProfit": fmt(take.trigger_price) if take else "0",
        "stopLoss": fmt(stop.trigger_price) if stop else "0",
        "trailingStop": "0",
        "unrealisedPnl": fmt(shown * (mark - entry)) if shown else "0",
        "curRealisedPnl": fmt(pos.cur_realised),
        "cumRealisedPnl": fmt(pos.cum_realised),
        "seq": engine._seq,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "sessionAvgPrice": "",
        "createdTime": str(pos.created_time),
        "updatedTime": str(pos.update_time),
    }
    if ws:
        row["category"] = "linear"
        row["entryPrice"] = fmt(entry)
    return row


def position_rows(engine: BybitEngine, symbols: set[str] | None) -> list[dict[str, object]]:
    """By symbol every slot (flat ones too); account-wide only open, visible ones."""
    if symbols is not None:
        return [position_row(engine, p) for s in sorted(symbols) for p in engine.slots(s)]
    now = now_ms()
    live = [p for p in engine.positions.values() if p.visible(now)]
    return [position_row(engine, p) for p in sorted(live, key=lambda p: p.update_time)]


def wallet_row(engine: BybitEngine) -> dict[str, object]:
    live = list(engine.positions.values())
    upnl = sum((engine.unrealized(p) for p in live), ZERO)
    position_im = sum((engine.position_margin(p) for p in live), ZERO)
    order_im = engine.order_margin()
    maint = sum((abs(p.amount) * engine.mark(p.symbol) for p in live), ZERO) * MAINT_MARGIN_RATE
    equity = engine.wallet + upnl
    available = equity - position_im - order_im
    cum = sum((p.cum_realised for p in live), ZERO)
    coin = {
        "coin": "USDT",
        "equity": fmt(equity),
        "usdValue": fmt(equity),
        "walletBalance": fmt(engine.wallet),
        "free": "",
        "locked": "0",
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "availableToWithdraw": "",  # deprecated in UTA 2.0: Bybit sends ""
        "availableToBorrow": "",
        "accruedInterest": "0",
        "totalOrderIM": fmt(order_im),
        "totalPositionIM": fmt(position_im),
        "totalPositionMM": fmt(maint),
        "unrealisedPnl": fmt(upnl),
        "cumRealisedPnl": fmt(cum),
        "bonus": "0",
        "marginCollateral": True,
        "collateralSwitch": True,
    }
    im_rate = (position_im + order_im) / equity if equity else ZERO
    return {
        "accountType": "UNIFIED",
        "totalEquity": fmt(equity),
        "accountIMRate": fmt(im_rate.quantize(Decimal("0.0001"))),
        "totalMarginBalance": fmt(equity),
        "totalInitialMargin": fmt(position_im + order_im),
        "totalAvailableBalance": fmt(available),
        "accountMMRate": fmt((maint / equity).quantize(Decimal("0.0001")) if equity else ZERO),
        "totalPerpUPL": fmt(upnl),
        "totalWalletBalance": fmt(engine.wallet),
        "accountLTV": "0",
        "totalMaintenanceMargin": fmt(maint),
        "coin": [coin],
    }


def matches_filter(order: BybitOrder, order_filter: str | None) -> bool:
    """`orderFilter`: Order (plain), StopOrder (conditional), tpslOrder; none: all kinds."""
    if order_filter == "Order":
        return not order.is_conditional
    if order_filter == "StopOrder":
        return order.stop_order_type == "Stop"
    if order_filter == "tpslOrder":
        return order.is_tpsl
    return True


def _asked_for(
    order: BybitOrder,
    symbols: set[str] | None,
    order_id: str | None = None,
    link_id: str | None = None,
) -> bool:
    """The order is on one of ``symbols`` and has the ids a list query asks for (None or
    empty: any)."""
    return (
        (symbols is None or order.symbol in symbols)
        and (not order_id or order.order_id == order_id)
        and (not link_id or order.link_id == link_id)
    )


def _newest_first(rows: Iterable[R]) -> list[R]:
    """What the list endpoints answer: newest first, by sequence."""
    return sorted(rows, key=lambda row: row.seq, reverse=True)
