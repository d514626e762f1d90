"""The Bybit v5 linear account of the paper exchange (UTA, USDT perpetuals).

Reuses the Binance dialect's parts where they fit: the market table and its filters
(`sim.markets`), the price book (`sim.prices`), the fee/balance config and the account
arithmetic (`sim.account`: fees, margin, taker price) and the fill arithmetic
(`sim.matching.apply_fill`). What is Bybit's own lives here:

* **one order book** for regular and conditional orders, UUID order ids, `orderLinkId`
  unique across *all* orders of the account (not only open ones, unlike Binance);
* **position modes**: one-way (`positionIdx` 0) and hedge (1 = long slot, 2 = short slot);
  an order whose `positionIdx` does not fit the mode is refused (10001);
* **position visibility**: a position that went from flat to open appears in the position
  list only `position_delay_ms` after the fill, and until then reduce-only orders (a stop
  placed right after the entry) are refused with 110017, as on Bybit;
* **conditional orders and position TP/SL** (what waits for a trigger) are
  ``ConditionalOrders``, mixed in from ``sim/bybit/conditional.py``.

What the account shows (order queries, position and wallet rows) is read by
``sim/bybit/views.py``. Synchronous, run on the server's event loop; `publish(topic, rows)`
feeds the private WebSocket topics (`order`, `execution`, `position`, `wallet`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from sim.account import (
    EngineConfig,
    MarginAccount,
    capped_by_limit,
    crosses,
    executable_quantity,
)
from sim.bybit import errors, views
from sim.bybit.conditional import TRIGGER_BY, ConditionalOrders
from sim.bybit.records import (
    ENGINE_SIDE,
    BybitOrder,
    BybitPosition,
    Execution,
    OrderIntent,
    bybit_id,
)
from sim.bybit.settings import BybitSettings
from sim.markets import Market
from sim.matching import apply_fill, now_ms
from sim.orders import ZERO
from sim.prices import PriceBook

Publish = Callable[[str, list[dict[str, object]]], None]
ORDER_NAMESPACE, EXEC_NAMESPACE = 0xB1B1, 0xE1E1
MARGIN_MODES = frozenset({"REGULAR_MARGIN", "ISOLATED_MARGIN", "PORTFOLIO_MARGIN"})


class BybitEngine(ConditionalOrders, MarginAccount):
    """Account state and order book of one Bybit UTA account (linear USDT contracts)."""

    def __init__(
        self,
        markets: dict[str, Market],
        prices: PriceBook,
        config: EngineConfig,
        settings: BybitSettings,
        publish: Publish | None = None,
    ) -> None:
        self.markets = markets
        self.prices = prices
        self.config = config
        self.settings = settings
        self.publish: Publish = publish or (lambda _topic, _rows: None)
        self.wallet = config.balance
        self.hedge = False
        self.margin_mode = "REGULAR_MARGIN"
        self.leverage: dict[str, int] = {}
        self.positions: dict[tuple[str, int], BybitPosition] = {}
        self.orders: dict[str, BybitOrder] = {}
        self.by_link: dict[str, BybitOrder] = {}
        self.executions: list[Execution] = []
        self.closed: list[str] = []  # order ids in the order they became final
        self._seq = 0

    # -- lookups ----------------------------------------------------------------------

    def market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise errors.SYMBOL_INVALID
        return market

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def slot(self, symbol: str, idx: int) -> BybitPosition:
        pos = self.positions.get((symbol, idx))
        if pos is None:
            lev = self.leverage.get(symbol, self.config.default_leverage)
            pos = BybitPosition(symbol, leverage=lev, position_idx=idx)
            self.positions[(symbol, idx)] = pos
        return pos

    def slots(self, symbol: str) -> list[BybitPosition]:
        return [self.slot(symbol, i) for i in ((1, 2) if self.hedge else (0,))]

    def check_idx(self, idx: int) -> None:
        if (idx not in (1, 2)) if self.hedge else idx != 0:
            raise errors.IDX_MISMATCH

    def closes_in_hedge(self, pos: BybitPosition, side: str) -> bool:
        """Hedge mode: Sell on the long slot and Buy on the short slot only reduce."""
        return self.hedge and (side == "Sell") == (pos.position_idx == 1)

    def reducible(self, pos: BybitPosition, side: str, *, visible_only: bool) -> Decimal:
        """How much an order on `side` can reduce of the slot (0 if it would increase it)."""
        if visible_only and not pos.visible(now_ms()):
            return ZERO
        if pos.amount > 0 and side == "Sell":
            return pos.amount
        if pos.amount < 0 and side == "Buy":
            return -pos.amount
        return ZERO

    def _reduces(self, order: BybitOrder | OrderIntent, pos: BybitPosition) -> bool:
        return order.reduce_only or order.close_on_trigger or self.closes_in_hedge(pos, order.side)

    def opening_quantity(self, pos: BybitPosition, side: str, qty: Decimal) -> Decimal:
        if self.closes_in_hedge(pos, side):
            return ZERO
        return max(ZERO, qty - self.reducible(pos, side, visible_only=False))

    def order_margin(self) -> Decimal:
        """Resting limit orders that are not reduce-only hold margin (conditional ones none)."""
        total = ZERO
        for order in self.open_orders():
            if order.order_type == "Limit" and not order.reduce_only and not order.is_conditional:
                total += order.leaves * order.price / self.leverage.get(order.symbol, 20)
        return total

    def open_orders(self, symbol: str | None = None) -> list[BybitOrder]:
        return [
            o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)
        ]

    # -- validation -------------------------------------------------------------------

    @staticmethod
    def validate_qty(market: Market, qty: Decimal, *, market_order: bool) -> None:
        if qty <= 0 or qty < market.min_qty:
            raise errors.QTY_MIN
        if qty % market.step_size != 0:
            raise errors.QTY_STEP
        if qty > (market.market_max_qty if market_order else market.max_qty):
            raise errors.QTY_MAX

    @staticmethod
    def validate_price(market: Market, price: Decimal) -> None:
        if price <= 0 or price % market.tick_size != 0:
            raise errors.PRICE_TICK

    def _check_reducible(self, pos: BybitPosition, side: str) -> None:
        if self.reducible(pos, side, visible_only=True) > 0:
            return
        same_side = pos.visible(now_ms()) and (pos.amount > 0) == (side == "Buy")
        raise errors.REDUCE_ONLY_SIDE if same_side else errors.REDUCE_ONLY_ZERO

    def _check_opening(self, market: Market, it: OrderIntent, price: Decimal) -> None:
        pos = self.slot(it.symbol, it.position_idx)
        opening = self.opening_quantity(pos, it.side, it.qty)
        if opening <= 0:
            return
        if not market.trading:
            raise errors.REDUCTION_ONLY_CONTRACT
        if it.qty * price < market.min_notional:
            raise errors.below_min_value(market.min_notional)
        if not self.affords(opening, price, pos.leverage):
            raise errors.BALANCE

    # -- placement --------------------------------------------------------------------

    def place(
        self,
        it: OrderIntent,
        *,
        defer_fill: bool = False,
        fill_fraction: Decimal | None = None,
    ) -> BybitOrder:
        """`/v5/order/create`: a market/limit order, or a conditional one (trigger price)."""
        market = self.market(it.symbol)
        self.check_idx(it.position_idx)
        self.validate_qty(market, it.qty, market_order=it.order_type == "Market")
        if it.order_type == "Limit":
            if it.price is None:
                raise errors.missing("price")
            self.validate_price(market, it.price)
        if it.link_id and it.link_id in self.by_link:
            raise errors.DUPLICATE_LINK_ID
        pos = self.slot(it.symbol, it.position_idx)
        if it.trigger_price is not None:
            return self._place_conditional(market, it, pos)
        if self._reduces(it, pos):
            self._check_reducible(pos, it.side)
        else:
            self._check_opening(market, it, self._taker_price(it.symbol, it.side))
        order = self._record(it)
        self._publish_order(order)
        if it.order_type == "Limit" and not self._marketable(order):
            return order
        if not defer_fill:
            self._execute(order, self._fill_price(order), fraction=fill_fraction)
        return order

    def _record(
        self, it: OrderIntent, *, stop_order_type: str = "", status: str = "New"
    ) -> BybitOrder:
        seq = self._next_seq()
        ts = now_ms()
        order = BybitOrder(
            seq=seq,
            order_id=bybit_id(ORDER_NAMESPACE, seq),
            link_id=it.link_id,
            symbol=it.symbol,
            side=it.side,
            order_type=it.order_type,
            qty=it.qty,
            price=it.price if it.order_type == "Limit" and it.price is not None else ZERO,
            position_idx=it.position_idx,
            created=ts,
            updated=ts,
            time_in_force="IOC" if it.order_type == "Market" else it.time_in_force,
            reduce_only=it.reduce_only,
            close_on_trigger=it.close_on_trigger,
            trigger_price=it.trigger_price or ZERO,
            trigger_direction=it.trigger_direction if it.trigger_price is not None else 0,
            trigger_by=it.trigger_by if it.trigger_price is not None else "",
            stop_order_type=stop_order_type,
            status=status,
        )
        self.orders[order.order_id] = order
        if order.link_id:
            self.by_link[order.link_id] = order
        return order

    def _taker_price(self, symbol: str, side: str) -> Decimal:
        return self.config.taker_price(self.prices, symbol, buying=side == "Buy")

    def _marketable(self, order: BybitOrder) -> bool:
        if order.order_type != "Limit":
            return True
        return crosses(order.price, self.mark(order.symbol), buying=order.side == "Buy")

    def _fill_price(self, order: BybitOrder) -> Decimal:
        taker = self._taker_price(order.symbol, order.side)
        if order.order_type != "Limit":
            return taker
        return capped_by_limit(taker, order.price, buying=order.side == "Buy")

    # -- execution --------------------------------------------------------------------

    def _execute(
        self,
        order: BybitOrder,
        price: Decimal,
        *,
        maker: bool = False,
        fraction: Decimal | None = None,
    ) -> None:
        pos = self.slot(order.symbol, order.position_idx)
        reduces = self._reduces(order, pos)
        reducible = self.reducible(pos, order.side, visible_only=False) if reduces else None
        step = self.market(order.symbol).step_size
        qty = executable_quantity(order.qty - order.cum_qty, reducible, fraction, step)
        if reducible is not None and fraction is None and qty > 0:
            order.qty = order.cum_qty + qty  # Bybit trims a reduce-only qty to the position
        if qty > 0:
            self._fill(order, pos, qty, price, maker)
        if order.cum_qty >= order.qty:
            order.status = "Filled"
        elif order.order_type == "Market" or fraction is not None or order.is_conditional:
            # the unfillable rest of an IOC-like order is cancelled at once
            order.status = "PartiallyFilledCanceled" if order.cum_qty else "Cancelled"
            order.cancel_type = "CancelByReduceOnly" if self._reduces(order, pos) else "UNKNOWN"
        order.updated = now_ms()
        self._finalize(order)
        self._publish_order(order)

    def _fill(
        self, order: BybitOrder, pos: BybitPosition, qty: Decimal, price: Decimal, maker: bool
    ) -> None:
        ts = now_ms()
        rate, fee = self.config.fee(qty, price, maker=maker)
        before = pos.amount
        closed = min(qty, self.reducible(pos, order.side, visible_only=False))
        pnl = apply_fill(pos, ENGINE_SIDE[order.side], qty, price, ts)
        self.wallet += pnl - fee
        pos.cum_realised += pnl - fee
        pos.cur_realised = (pos.cur_realised if before else ZERO) + pnl - fee
        if pos.amount != 0 and (before == 0 or (before > 0) != (pos.amount > 0)):
            pos.created_time = ts  # flat -> open (or flipped): the position service lags
            pos.visible_at = ts + self.settings.position_delay_ms
        order.cum_qty += qty
        order.cum_value += qty * price
        order.cum_fee += fee
        order.updated = ts
        order.status = "Filled" if order.cum_qty >= order.qty else "PartiallyFilled"
        seq = self._next_seq()
        execution = Execution(
            seq=seq,
            exec_id=bybit_id(EXEC_NAMESPACE, seq),
            order=order,
            price=price,
            qty=qty,
            fee=fee,
            fee_rate=rate,
            is_maker=maker,
            time=ts,
            mark=self.mark(order.symbol),
            closed_size=closed,
            pnl=pnl,
        )
        self.executions.append(execution)
        if pos.amount == 0:
            self._clear_tpsl(pos)
        self.publish("execution", [execution.to_ws()])
        self.publish("position", [views.position_row(self, pos, ws=True)])
        self.publish("wallet", [views.wallet_row(self)])

    def fill_deferred(self, order_id: str, fraction: Decimal | None = None) -> None:
        """Complete a market order that a delayed-fill fault left `New`."""
        order = self.orders.get(order_id)
        if order is not None and order.is_open and not order.is_conditional:
            self._execute(order, self._fill_price(order), fraction=fraction)

    def _finalize(self, order: BybitOrder) -> None:
        if not order.is_open and (not self.closed or self.closed[-1] != order.order_id):
            self.closed.append(order.order_id)

    def _publish_order(self, order: BybitOrder) -> None:
        self.publish("order", [order.to_ws()])

    def on_prices(self, symbols: Iterable[str]) -> None:
        """Fire crossed conditional orders and fill crossed resting limits."""
        moved = set(symbols)
        if not moved:
            return
        for order in list(self.orders.values()):
            if order.symbol not in moved or not order.is_open:
                continue
            if order.status == "Untriggered":
                if self._crossed(order):
                    self._trigger(order)
            elif order.order_type == "Limit" and self._marketable(order):
                self._execute(order, order.price, maker=True)

    # -- amend / cancel ---------------------------------------------------------------

    def find(self, symbol: str, order_id: str | None, link_id: str | None) -> BybitOrder:
        order = self.orders.get(order_id) if order_id else self.by_link.get(link_id or "")
        if order is None or order.symbol != symbol:
            raise errors.ORDER_NOT_FOUND
        return order

    def amend(
        self,
        symbol: str,
        order_id: str | None,
        link_id: str | None,
        *,
        qty: Decimal | None = None,
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        trigger_by: str | None = None,
    ) -> BybitOrder:
        """`/v5/order/amend`: move a stop (or resize/reprice) in place, same order id."""
        market = self.market(symbol)
        order = self.find(symbol, order_id, link_id)
        if not order.is_open or order.status == "Triggered":
            raise errors.ORDER_NOT_FOUND
        changed = False
        if qty is not None and qty != order.qty:
            self.validate_qty(market, qty, market_order=order.order_type == "Market")
            if qty <= order.cum_qty:
                raise errors.params("qty invalid: not above the filled quantity")
            order.qty, changed = qty, True
        if price is not None and price != order.price:
            if order.order_type != "Limit":
                raise errors.params("price invalid for a market order")
            self.validate_price(market, price)
            order.price, changed = price, True
        if trigger_price is not None and trigger_price != order.trigger_price:
            if not order.is_conditional:
                raise errors.params("triggerPrice invalid for a non-conditional order")
            self.validate_price(market, trigger_price)
            self._check_trigger(symbol, order.trigger_direction, trigger_price)
            order.trigger_price, changed = trigger_price, True
        if trigger_by is not None and trigger_by != order.trigger_by:
            if trigger_by not in TRIGGER_BY:
                raise errors.TRIGGER_BY
            order.trigger_by, changed = trigger_by, True
        if not changed:
            raise errors.NOT_MODIFIED
        order.updated = now_ms()
        self._publish_order(order)
        if order.order_type == "Limit" and not order.is_conditional and self._marketable(order):
            self._execute(order, order.price, maker=True)
        return order

    def cancel(self, symbol: str, order_id: str | None, link_id: str | None) -> BybitOrder:
        order = self.find(symbol, order_id, link_id)
        if not order.is_open or order.status == "Triggered":
            raise errors.ORDER_NOT_FOUND
        self._cancel(order, "CancelByUser")
        return order

    def _cancel(self, order: BybitOrder, cancel_type: str) -> None:
        order.status = "Deactivated" if order.status == "Untriggered" else "Cancelled"
        order.cancel_type = cancel_type
        order.updated = now_ms()
        self._finalize(order)
        self._publish_order(order)

    def cancel_all(self, symbol: str | None, order_filter: str | None) -> list[BybitOrder]:
        cancelled = [
            o
            for o in self.open_orders(symbol)
            if o.status != "Triggered" and views.matches_filter(o, order_filter)
        ]
        for order in cancelled:
            self._cancel(order, "CancelByUser")
        return cancelled

    # -- position settings ------------------------------------------------------------

    def set_leverage(self, symbol: str, buy: Decimal, sell: Decimal) -> None:
        market = self.market(symbol)
        for name, value in (("buyLeverage", buy), ("sellLeverage", sell)):
            if value != value.to_integral_value() or not 1 <= value <= market.max_leverage:
                raise errors.leverage_invalid(name)
        if buy != sell:
            raise errors.params("buyLeverage must equal sellLeverage")
        leverage = int(buy)
        if self.leverage.get(symbol, self.config.default_leverage) == leverage:
            raise errors.LEVERAGE_UNCHANGED
        self.leverage[symbol] = leverage
        for pos in self.slots(symbol):
            pos.leverage = leverage

    def switch_mode(self, symbol: str | None, hedge: bool) -> None:
        """Switch one-way/hedge (account-wide here: Bybit scopes it per coin or symbol)."""
        if symbol is not None:
            self.market(symbol)
        if hedge == self.hedge:
            raise errors.MODE_UNCHANGED
        if any(p.amount for p in self.positions.values()):
            raise errors.MODE_HAS_POSITION
        if self.open_orders():
            raise errors.MODE_HAS_ORDERS
        self.hedge = hedge
        self.positions.clear()

    def set_margin_mode(self, mode: str) -> list[dict[str, str]]:
        """Account margin mode; refused while anything is open (Bybit lists the reasons)."""
        if mode not in MARGIN_MODES:
            raise errors.params("setMarginMode invalid")
        if mode == self.margin_mode:
            return []
        if any(p.amount for p in self.positions.values()) or self.open_orders():
            raise errors.MARGIN_MODE_FAILED
        self.margin_mode = mode
        return []

    # -- admin ("by hand") ------------------------------------------------------------

    def force_fill(self, symbol: str, side: str, qty: Decimal, idx: int) -> BybitOrder:
        """A trade at mark as if done by hand in the UI: no margin or notional checks."""
        market = self.market(symbol)
        self.check_idx(idx)
        self.validate_qty(market, qty, market_order=False)
        order = self._record(OrderIntent(symbol, side, "Market", qty, position_idx=idx))
        self._publish_order(order)
        self._execute(order, self.mark(symbol))
        return order

    def close_by_hand(self, symbol: str, idx: int | None = None) -> list[BybitOrder]:
        self.market(symbol)
        done = []
        for pos in self.slots(symbol):
            if pos.amount == 0 or (idx is not None and pos.position_idx != idx):
                continue
            side = "Sell" if pos.amount > 0 else "Buy"
            intent = OrderIntent(
                symbol, side, "Market", abs(pos.amount), pos.position_idx, reduce_only=True
            )
            order = self._record(intent)
            self._publish_order(order)
            self._execute(order, self.mark(symbol))
            done.append(order)
        return done
