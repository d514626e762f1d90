"""Conditional orders and position TP/SL of the Bybit paper account: what waits for a trigger.

Why a module of its own: on Bybit regular and conditional orders share one book and one id
space (sim/bybit/engine.py holds the book, the account and the matching), but what waits
for a trigger has rules of its own:

* **conditional orders** carry `triggerDirection` (1 rising, 2 falling) and `triggerBy`;
  one whose trigger is already crossed is refused (110092/110093); they wait `Untriggered`,
  fire on the mark price, run as market orders under the same id and end `Filled`, or
  `Deactivated` when cancelled or when a reduce-only one finds nothing to reduce;
* **position TP/SL** (`/v5/position/trading-stop`, Full mode): a `StopLoss`/`TakeProfit`
  order with quantity 0 that closes the whole slot and goes away with the position;
* reduce-only conditional orders are *not* cancelled when their position goes flat (the
  engine's zombie cleaner must remove them), at most `max_stop_orders` per symbol (110009).

``ConditionalOrders`` is mixed into ``BybitEngine`` and reaches the account through it
(declared below for the type checker).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from sim.bybit import errors
from sim.bybit.records import (
    FALLING,
    RISING,
    BybitOrder,
    BybitPosition,
    OrderIntent,
    opposite,
)
from sim.bybit.settings import BybitSettings
from sim.orders import ZERO, now_ms

if TYPE_CHECKING:
    from sim.markets import Market

TRIGGER_BY = frozenset({"LastPrice", "MarkPrice", "IndexPrice"})


class ConditionalOrders:
    """Placement, triggering and position TP/SL of the orders that wait for a trigger."""

    settings: BybitSettings

    if TYPE_CHECKING:
        # provided by the engine this is mixed into (sim/bybit/engine.py)
        def market(self, symbol: str) -> Market: ...
        def mark(self, symbol: str) -> Decimal: ...
        def check_idx(self, idx: int) -> None: ...
        def slot(self, symbol: str, idx: int) -> BybitPosition: ...
        def open_orders(self, symbol: str | None = None) -> list[BybitOrder]: ...
        def reducible(self, pos: BybitPosition, side: str, *, visible_only: bool) -> Decimal: ...
        def _reduces(self, order: BybitOrder | OrderIntent, pos: BybitPosition) -> bool: ...
        def _check_reducible(self, pos: BybitPosition, side: str) -> None: ...
        @staticmethod
        def validate_price(market: Market, price: Decimal) -> None: ...
        def _record(
            self, it: OrderIntent, *, stop_order_type: str = "", status: str = "New"
        ) -> BybitOrder: ...
        def _taker_price(self, symbol: str, side: str) -> Decimal: ...
        def _execute(
            self,
            order: BybitOrder,
            price: Decimal,
            *,
            maker: bool = False,
            fraction: Decimal | None = None,
        ) -> None: ...
        def _finalize(self, order: BybitOrder) -> None: ...
        def _publish_order(self, order: BybitOrder) -> None: ...
        def _cancel(self, order: BybitOrder, cancel_type: str) -> None: ...

    def _check_trigger(self, symbol: str, direction: int, trigger: Decimal) -> None:
        mark = self.mark(symbol)
        if direction == RISING and trigger <= mark:
            raise errors.would_trigger(True, trigger, mark)
        if direction == FALLING and trigger >= mark:
            raise errors.would_trigger(False, trigger, mark)

    def _place_conditional(self, market: Market, it: OrderIntent, pos: BybitPosition) -> BybitOrder:
        assert it.trigger_price is not None
        if it.trigger_direction not in (RISING, FALLING):
            raise errors.TRIGGER_DIRECTION
        if it.trigger_by not in TRIGGER_BY:
            raise errors.TRIGGER_BY
        self.validate_price(market, it.trigger_price)
        self._check_trigger(it.symbol, it.trigger_direction, it.trigger_price)
        if self._reduces(it, pos):
            self._check_reducible(pos, it.side)
        elif not market.trading:
            raise errors.REDUCTION_ONLY_CONTRACT
        elif it.qty * it.trigger_price < market.min_notional:
            raise errors.below_min_value(market.min_notional)
        waiting = [o for o in self.open_orders(it.symbol) if o.stop_order_type == "Stop"]
        if len(waiting) >= self.settings.max_stop_orders:
            raise errors.TOO_MANY_STOPS
        order = self._record(it, stop_order_type="Stop", status="Untriggered")
        self._publish_order(order)
        return order

    def _crossed(self, order: BybitOrder) -> bool:
        """The mark has reached an untriggered order's trigger, in its direction."""
        mark = self.mark(order.symbol)
        return (
            mark >= order.trigger_price
            if order.trigger_direction == RISING
            else mark <= order.trigger_price
        )

    def _trigger(self, order: BybitOrder) -> None:
        order.status = "Triggered"
        order.updated = now_ms()
        self._publish_order(order)
        pos = self.slot(order.symbol, order.position_idx)
        if order.is_tpsl:
            order.qty = self.reducible(pos, order.side, visible_only=False)
        elif self._reduces(order, pos):
            order.qty = min(order.qty, self.reducible(pos, order.side, visible_only=False))
        if order.qty <= 0:
            order.status = "Deactivated"
            order.cancel_type = "CancelByReduceOnly"
            order.updated = now_ms()
            self._finalize(order)
            self._publish_order(order)
            return
        self._execute(order, self._taker_price(order.symbol, order.side))

    def trading_stop(
        self,
        symbol: str,
        idx: int,
        *,
        take_profit: Decimal | None,
        stop_loss: Decimal | None,
        tp_trigger_by: str,
        sl_trigger_by: str,
    ) -> None:
        """`/v5/position/trading-stop` (Full mode): set, move or clear ("0") TP/SL."""
        market = self.market(symbol)
        self.check_idx(idx)
        pos = self.slot(symbol, idx)
        if not pos.visible(now_ms()):
            raise errors.ZERO_POSITION_TPSL
        long = pos.amount > 0
        for kind, price, trigger_by in (
            ("StopLoss", stop_loss, sl_trigger_by),
            ("TakeProfit", take_profit, tp_trigger_by),
        ):
            if price is None:
                continue
            existing = self.tpsl_order(pos, kind)
            if price == 0:
                if existing is not None:
                    self._cancel(existing, "CancelByUser")
                continue
            if trigger_by not in TRIGGER_BY:
                raise errors.TRIGGER_BY
            self.validate_price(market, price)
            rising = (kind == "StopLoss") != long
            try:
                self._check_trigger(symbol, RISING if rising else FALLING, price)
            except errors.BybitError:
                raise errors.stop_loss_side(pos.side, price, self.mark(symbol)) from None
            if existing is not None:
                existing.trigger_price, existing.trigger_by = price, trigger_by
                existing.updated = now_ms()
                self._publish_order(existing)
                continue
            intent = OrderIntent(
                symbol=symbol,
                side=opposite(pos.side),
                order_type="Market",
                qty=ZERO,
                position_idx=idx,
                reduce_only=True,
                close_on_trigger=True,
                trigger_price=price,
                trigger_direction=RISING if rising else FALLING,
                trigger_by=trigger_by,
            )
            order = self._record(intent, stop_order_type=kind, status="Untriggered")
            order.tpsl_mode = "Full"
            self._publish_order(order)

    def tpsl_order(self, pos: BybitPosition, kind: str) -> BybitOrder | None:
        for order in self.open_orders(pos.symbol):
            if order.stop_order_type == kind and order.position_idx == pos.position_idx:
                return order
        return None

    def _clear_tpsl(self, pos: BybitPosition) -> None:
        """Position-level TP/SL belong to the position: they go when it goes."""
        for kind in ("StopLoss", "TakeProfit"):
            order = self.tpsl_order(pos, kind)
            if order is not None and order.status == "Untriggered":
                self._cancel(order, "CancelByTpSlTsClear")
