"""Order, algo order, position and trade records, and their Binance wire shapes.

Two families, like Binance USD-M since the algo-order migration: plain orders (MARKET,
LIMIT) with `orderId`/`clientOrderId`, and conditional orders (STOP_MARKET,
TAKE_PROFIT_MARKET) with `algoId`/`clientAlgoId` that live in a separate book. The
`to_api` shapes are what REST answers; the `to_event` shapes are what the user data
stream pushes. Field names and status strings are the ones ccxt's parsers read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
ALGO_OPEN_STATUSES = frozenset({"NEW"})
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
PLAIN_TYPES = frozenset({"MARKET", "LIMIT"})


def now_ms() -> int:
    """The venue's clock: milliseconds since the epoch, as its timestamps are."""
    return int(time.time() * 1000)


def fmt(value: Decimal) -> str:
    """Decimal to Binance's plain string form (never exponent notation)."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass
class OrderRequest:
    """A validated order intent, from REST, admin or a triggered algo order."""

    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT / STOP_MARKET / TAKE_PROFIT_MARKET
    quantity: Decimal = ZERO
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    reduce_only: bool = False
    close_position: bool = False
    time_in_force: str = "GTC"
    working_type: str = "CONTRACT_PRICE"
    client_id: str = ""
    position_side: str = "BOTH"
    price_protect: bool = False


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    orig_type: str
    quantity: Decimal
    price: Decimal
    time: int
    reduce_only: bool = False
    close_position: bool = False
    stop_price: Decimal = ZERO
    time_in_force: str = "GTC"
    working_type: str = "CONTRACT_PRICE"
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    price_protect: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty

    def to_api(self) -> dict[str, object]:
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_id,
            "price": fmt(self.price),
            "avgPrice": fmt(self.avg_price),
            "origQty": fmt(self.quantity),
            "executedQty": fmt(self.executed_qty),
            "cumQty": fmt(self.executed_qty),
            "cumQuote": fmt(self.cum_quote),
            "timeInForce": self.time_in_force,
            "type": self.type,
            "reduceOnly": self.reduce_only,
            "closePosition": self.close_position,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": fmt(self.stop_price),
            "workingType": self.working_type,
            "priceProtect": self.price_protect,
            "origType": self.orig_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self.time,
            "updateTime": self.update_time or self.time,
        }

    def to_event(
        self, execution: str, fill: Fill | None = None, event_time: int = 0
    ) -> dict[str, object]:
        """The `o` object of an ORDER_TRADE_UPDATE event."""
        last_qty = fill.quantity if fill else ZERO
        last_price = fill.price if fill else ZERO
        return {
            "s": self.symbol,
            "c": self.client_id,
            "S": self.side,
            "o": self.type,
            "f": self.time_in_force,
            "q": fmt(self.quantity),
            "p": fmt(self.price),
            "ap": fmt(self.avg_price),
            "sp": fmt(self.stop_price),
            "x": execution,
            "X": self.status,
            "i": self.order_id,
            "l": fmt(last_qty),
            "z": fmt(self.executed_qty),
            "L": fmt(last_price),
            "N": "USDT",
            "n": fmt(fill.commission) if fill else "0",
            "T": event_time or self.update_time or self.time,
            "t": fill.trade_id if fill else 0,
            "b": "0",
            "a": "0",
            "m": bool(fill and fill.maker),
            "R": self.reduce_only,
            "wt": self.working_type,
            "ot": self.orig_type,
            "ps": "BOTH",
            "cp": self.close_position,
            "rp": fmt(fill.realized_pnl) if fill else "0",
            "pP": self.price_protect,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        }


@dataclass
class AlgoOrder:
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    trigger_price: Decimal
    create_time: int
    price: Decimal = ZERO
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    time_in_force: str = "GTC"
    price_protect: bool = False
    status: str = "NEW"
    update_time: int = 0
    trigger_time: int = 0
    actual_order_id: int | None = None
    fill_price: Decimal = ZERO
    fill_qty: Decimal = ZERO
    reject_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in ALGO_OPEN_STATUSES

    def to_api(self) -> dict[str, object]:
        return {
            "algoId": self.algo_id,
            "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": self.order_type,
            "symbol": self.symbol,
            "side": self.side,
            "positionSide": "BOTH",
            "timeInForce": self.time_in_force,
            "quantity": fmt(self.quantity),
            "algoStatus": self.status,
            "actualOrderId": str(self.actual_order_id or ""),
            "actualPrice": fmt(self.fill_price),
            "triggerPrice": fmt(self.trigger_price),
            "price": fmt(self.price),
            "icebergQuantity": None,
            "tpTriggerPrice": "0",
            "tpPrice": "0",
            "slTriggerPrice": "0",
            "slPrice": "0",
            "tpOrderType": "",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": self.working_type,
            "priceMatch": "NONE",
            "closePosition": self.close_position,
            "priceProtect": self.price_protect,
            "reduceOnly": self.reduce_only,
            "createTime": self.create_time,
            "updateTime": self.update_time or self.create_time,
            "triggerTime": self.trigger_time,
            "goodTillDate": 0,
        }

    def to_event(self) -> dict[str, object]:
        """The `o` object of an ALGO_UPDATE event."""
        return {
            "caid": self.client_algo_id,
            "aid": self.algo_id,
            "at": "CONDITIONAL",
            "o": self.order_type,
            "s": self.symbol,
            "S": self.side,
            "ps": "BOTH",
            "f": self.time_in_force,
            "q": fmt(self.quantity),
            "X": self.status,
            "ai": str(self.actual_order_id or ""),
            "ap": fmt(self.fill_price),
            "aq": fmt(self.fill_qty),
            "act": "MARKET" if self.actual_order_id else "0",
            "tp": fmt(self.trigger_price),
            "p": fmt(self.price),
            "V": "EXPIRE_MAKER",
            "wt": self.working_type,
            "pm": "NONE",
            "cp": self.close_position,
            "pP": self.price_protect,
            "R": self.reduce_only,
            "tt": self.trigger_time,
            "gtd": 0,
            "rm": self.reject_reason,
        }


@dataclass
class Position:
    symbol: str
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short (one-way mode)
    entry_price: Decimal = ZERO
    leverage: int = 20
    margin_type: str = "cross"
    update_time: int = 0


@dataclass
class Fill:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int

    def to_api(self) -> dict[str, object]:
        return {
            "id": self.trade_id,
            "orderId": self.order_id,
            "symbol": self.symbol,
            "side": self.side,
            "price": fmt(self.price),
            "qty": fmt(self.quantity),
            "quoteQty": fmt(self.price * self.quantity),
            "commission": fmt(self.commission),
            "commissionAsset": "USDT",
            "realizedPnl": fmt(self.realized_pnl),
            "buyer": self.side == "BUY",
            "maker": self.maker,
            "positionSide": "BOTH",
            "marginAsset": "USDT",
            "time": self.time,
        }


@dataclass
class Ledger:
    """Everything that happened, kept for history endpoints and the admin snapshot.

    Why the indexes beside the history: the history only grows (every order and algo order
    of the account's life), and a placement, a lookup by client id and every tick's trigger
    pass used to scan all of it, so each request cost more the longer the exchange ran. The
    indexes hold what those need: the orders that may still be open (pruned as they are
    read: an order never reopens) and the latest order per client id. They are derived, so
    a persisted account keeps only the history and rebuilds them on load.
    """

    orders: dict[int, Order] = field(default_factory=dict)
    algo_orders: dict[int, AlgoOrder] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self._live_orders = {i: o for i, o in self.orders.items() if o.is_open}
        self._live_algos = {i: a for i, a in self.algo_orders.items() if a.is_open}
        self._order_by_client: dict[tuple[str, str], Order] = {}
        for order in self.orders.values():
            self._order_by_client[(order.symbol, order.client_id)] = order
        self._algo_by_client = {a.client_algo_id: a for a in self.algo_orders.values()}

    def __getstate__(self) -> dict[str, object]:
        return {"orders": self.orders, "algo_orders": self.algo_orders, "fills": self.fills}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._reindex()

    def add_order(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self._live_orders[order.order_id] = order
        self._order_by_client[(order.symbol, order.client_id)] = order

    def add_algo(self, algo: AlgoOrder) -> None:
        self.algo_orders[algo.algo_id] = algo
        self._live_algos[algo.algo_id] = algo
        self._algo_by_client[algo.client_algo_id] = algo

    def open_orders(self) -> list[Order]:
        """The open orders, oldest first (as in the history)."""
        return _still_open(self._live_orders)

    def open_algos(self) -> list[AlgoOrder]:
        """The open algo orders, oldest first (as in the history)."""
        return _still_open(self._live_algos)

    def latest_order(self, symbol: str, client_id: str) -> Order | None:
        """The newest order of ``symbol`` placed with ``client_id``, open or not."""
        return self._order_by_client.get((symbol, client_id))

    def latest_algo(self, client_id: str) -> AlgoOrder | None:
        """The newest algo order placed with ``client_id``, open or not."""
        return self._algo_by_client.get(client_id)


def _still_open(live: dict[int, Any]) -> list[Any]:
    """The entries of ``live`` still open; the others leave it for good."""
    gone = [key for key, entry in live.items() if not entry.is_open]
    for key in gone:
        del live[key]
    return list(live.values())
