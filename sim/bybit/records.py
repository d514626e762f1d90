"""Orders, positions and executions of the Bybit dialect, and their v5 wire shapes.

Bybit keeps regular and conditional orders in one book with one id space (UUID strings);
a conditional order (`stopOrderType` "Stop", or "StopLoss"/"TakeProfit" for position-level
TP/SL) waits as `Untriggered`, becomes `Triggered` and then `Filled` under the same
`orderId`, or `Deactivated` when cancelled before it fired. Field names, status strings
and the shapes are those ccxt's `bybit.parse_order` / `parse_position` / `parse_trade`
read (the `tpslMode` key is how ccxt recognises a contract order, so it is always sent).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sim.orders import ZERO, Position, fmt

#: Bybit's side words to the matching engine's (`sim.matching.apply_fill`).
ENGINE_SIDE = {"Buy": "BUY", "Sell": "SELL"}
OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered", "Triggered"})
TPSL_TYPES = frozenset({"StopLoss", "TakeProfit"})
RISING, FALLING = 1, 2


def bybit_id(namespace: int, seq: int) -> str:
    """A UUID-shaped id, deterministic per instance and sequence number."""
    return str(uuid.UUID(int=(namespace << 64) | seq))


def opposite(side: str) -> str:
    return "Sell" if side == "Buy" else "Buy"


@dataclass
class OrderIntent:
    """A validated `/v5/order/create` request (or an admin order)."""

    symbol: str
    side: str  # Buy / Sell
    order_type: str  # Market / Limit
    qty: Decimal
    position_idx: int = 0
    price: Decimal | None = None
    link_id: str = ""
    time_in_force: str = "GTC"
    reduce_only: bool = False
    close_on_trigger: bool = False
    trigger_price: Decimal | None = None
    trigger_direction: int = 0
    trigger_by: str = "LastPrice"


@dataclass
class BybitOrder:
    seq: int
    order_id: str
    link_id: str
    symbol: str
    side: str  # Buy / Sell
    order_type: str  # Market / Limit
    qty: Decimal
    price: Decimal
    position_idx: int
    created: int
    time_in_force: str = "GTC"
    reduce_only: bool = False
    close_on_trigger: bool = False
    trigger_price: Decimal = ZERO
    trigger_direction: int = 0
    trigger_by: str = ""
    stop_order_type: str = ""  # "", Stop, StopLoss, TakeProfit
    tpsl_mode: str = ""
    status: str = "New"
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    updated: int = 0
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_conditional(self) -> bool:
        return self.stop_order_type != ""

    @property
    def is_tpsl(self) -> bool:
        return self.stop_order_type in TPSL_TYPES

    @property
    def leaves(self) -> Decimal:
        return max(ZERO, self.qty - self.cum_qty) if self.is_open else ZERO

    @property
    def avg_price(self) -> Decimal:
        return self.cum_value / self.cum_qty if self.cum_qty else ZERO

    def to_api(self) -> dict[str, object]:
        return {
            "orderId": self.order_id,
            "orderLinkId": self.link_id,
            "blockTradeId": "",
            "symbol": self.symbol,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "side": self.side,
            "isLeverage": "",
            "positionIdx": self.position_idx,
            "orderStatus": self.status,
            "cancelType": self.cancel_type,
            "rejectReason": self.reject_reason,
            "avgPrice": fmt(self.avg_price) if self.cum_qty else "",
            "leavesQty": fmt(self.leaves),
            "leavesValue": fmt(self.leaves * self.price),
            "cumExecQty": fmt(self.cum_qty),
            "cumExecValue": fmt(self.cum_value),
            "cumExecFee": fmt(self.cum_fee),
            "timeInForce": self.time_in_force,
            "orderType": self.order_type,
            "stopOrderType": self.stop_order_type,
            "orderIv": "",
            "triggerPrice": fmt(self.trigger_price),
            "takeProfit": "",
            "stopLoss": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": self.trigger_direction,
            "triggerBy": self.trigger_by,
            "lastPriceOnCreated": "",
            "reduceOnly": self.reduce_only,
            "closeOnTrigger": self.close_on_trigger,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": self.tpsl_mode,
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(self.created),
            "updatedTime": str(self.updated or self.created),
        }

    def to_ws(self) -> dict[str, object]:
        """An element of the private `order` topic's `data`."""
        return {"category": "linear", **self.to_api(), "feeCurrency": "", "closedPnl": "0"}


@dataclass
class BybitPosition(Position):
    """One position slot: (symbol, 0) in one-way mode, (symbol, 1 long / 2 short) in hedge.

    `visible_at`: when the position list starts showing a position that went from flat to
    open (Bybit's position service lags its matching engine; orders that need the position,
    reduce-only ones, are refused until then).
    """

    position_idx: int = 0
    visible_at: int = 0
    created_time: int = 0
    cum_realised: Decimal = ZERO
    cur_realised: Decimal = ZERO

    @property
    def side(self) -> str:
        if self.amount > 0:
            return "Buy"
        if self.amount < 0:
            return "Sell"
        return ""

    def visible(self, now: int) -> bool:
        return self.amount != 0 and self.visible_at <= now


@dataclass
class Execution:
    seq: int
    exec_id: str
    order: BybitOrder = field(repr=False)
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_rate: Decimal
    is_maker: bool
    time: int
    mark: Decimal
    closed_size: Decimal
    pnl: Decimal

    def to_api(self) -> dict[str, object]:
        order = self.order
        return {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderLinkId": order.link_id,
            "side": order.side,
            "orderPrice": fmt(order.price),
            "orderQty": fmt(order.qty),
            "leavesQty": fmt(order.leaves),
            "createType": "CreateByUser",
            "orderType": order.order_type,
            "stopOrderType": order.stop_order_type,
            "execFee": fmt(self.fee),
            "execId": self.exec_id,
            "execPrice": fmt(self.price),
            "execQty": fmt(self.qty),
            "execType": "Trade",
            "execValue": fmt(self.price * self.qty),
            "execTime": str(self.time),
            "feeCurrency": "USDT",
            "isMaker": self.is_maker,
            "feeRate": fmt(self.fee_rate),
            "tradeIv": "",
            "markIv": "",
            "markPrice": fmt(self.mark),
            "indexPrice": fmt(self.mark),
            "underlyingPrice": "",
            "blockTradeId": "",
            "closedSize": fmt(self.closed_size),
            "execPnl": fmt(self.pnl),
            "seq": self.seq,
        }

    def to_ws(self) -> dict[str, object]:
        return {"category": "linear", **self.to_api()}
