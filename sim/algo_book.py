"""The algo book of the Binance paper exchange: conditional orders apart from the matching.

Why a module of its own: since Binance USD-M's algo-order migration, STOP_MARKET and
TAKE_PROFIT_MARKET orders live in a separate book with their own ids (``algoId`` /
``clientAlgoId``), their own placement rules (-2021 when they would trigger at once, one
closePosition order per side and type) and their own life (NEW, then TRIGGERED and FINISHED,
or EXPIRED when a reduce-only one finds nothing to reduce, or CANCELED). The matching engine
(``sim/matching.py``) holds the account and the plain orders; once an algo order triggers it
runs there as a MARKET order. ``AlgoBook`` is mixed into that engine and reaches the account
through it (declared below for the type checker).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from sim import errors
from sim.errors import SimError
from sim.orders import ZERO, AlgoOrder, Ledger, OrderRequest, now_ms

if TYPE_CHECKING:
    from sim.markets import Market
    from sim.orders import Fill, Order

#: A user-data stream event, as the WebSocket layer pushes it.
Event = dict[str, object]
ALGO_ID_BASE = 2_000_000


class AlgoBook:
    """Conditional orders of one account: placement, triggering on the mark, cancel, query."""

    ledger: Ledger
    publish: Callable[[Event], None]
    _next_algo: int

    if TYPE_CHECKING:
        # provided by the matching engine this book is mixed into (sim/matching.py)
        def market(self, symbol: str) -> Market: ...
        def mark(self, symbol: str) -> Decimal: ...
        def validate_quantity(
            self, market: Market, qty: Decimal, *, market_order: bool
        ) -> None: ...
        def validate_price(self, market: Market, price: Decimal) -> None: ...
        def reducible(self, symbol: str, side: str) -> Decimal: ...
        def _check_client_id(self, client_id: str) -> None: ...
        def _check_position_side(self, req: OrderRequest) -> None: ...
        def _taker_price(self, req: OrderRequest) -> Decimal: ...
        def _record_order(self, req: OrderRequest, orig_type: str | None = None) -> Order: ...
        def _order_event(self, order: Order, execution: str, fill: Fill | None = None) -> Event: ...
        def _execute(
            self,
            order: Order,
            price: Decimal,
            *,
            maker: bool = False,
            fraction: Decimal | None = None,
        ) -> None: ...

    def place_algo(self, req: OrderRequest) -> AlgoOrder:
        market = self.market(req.symbol)
        self._check_position_side(req)
        if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise errors.BAD_ORDER_TYPE
        if req.trigger_price is None:
            raise errors.missing("triggerPrice")
        self.validate_price(market, req.trigger_price)
        self._check_algo_quantity(market, req)
        if req.client_id:
            self._check_client_id(req.client_id)
        if req.close_position and self._has_close_position(req):
            raise errors.CLOSE_POSITION_EXISTS
        if self._triggered(req.type, req.side, req.trigger_price, self.mark(req.symbol)):
            raise errors.WOULD_TRIGGER
        if not market.trading and not (req.reduce_only or req.close_position):
            raise errors.NOT_TRADING
        self._next_algo += 1
        ts = now_ms()
        algo = AlgoOrder(
            algo_id=self._next_algo,
            client_algo_id=req.client_id or f"sim-algo-{self._next_algo}",
            symbol=req.symbol,
            side=req.side,
            order_type=req.type,
            quantity=ZERO if req.close_position else req.quantity,
            trigger_price=req.trigger_price,
            create_time=ts,
            update_time=ts,
            reduce_only=req.reduce_only,
            close_position=req.close_position,
            working_type=req.working_type,
            time_in_force=req.time_in_force,
            price_protect=req.price_protect,
        )
        self.ledger.add_algo(algo)
        self.publish(self._algo_event(algo))
        return algo

    def _check_algo_quantity(self, market: Market, req: OrderRequest) -> None:
        if req.close_position:
            if req.quantity:
                raise errors.not_required("quantity")
            if req.reduce_only:
                raise errors.not_required("reduceOnly")
            return
        self.validate_quantity(market, req.quantity, market_order=True)
        notional = req.quantity * req.trigger_price if req.trigger_price else ZERO
        if not req.reduce_only and notional < market.min_notional:
            raise errors.min_notional(market.min_notional)

    def _has_close_position(self, req: OrderRequest) -> bool:
        return any(
            a.close_position
            and a.symbol == req.symbol
            and a.side == req.side
            and a.order_type == req.type
            for a in self.ledger.open_algos()
        )

    @staticmethod
    def _triggered(order_type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
        # STOP: sell when price falls to the trigger, buy when it rises to it.
        # TAKE_PROFIT: the opposite directions.
        rising = (order_type == "STOP_MARKET") == (side == "BUY")
        return mark >= trigger if rising else mark <= trigger

    def fire_triggered(self, moved: set[str]) -> None:
        """Trigger every open algo order on a moved symbol whose trigger the mark crossed."""
        for algo in self.ledger.open_algos():
            if algo.is_open and algo.symbol in moved:
                mark = self.mark(algo.symbol)
                if self._triggered(algo.order_type, algo.side, algo.trigger_price, mark):
                    self._trigger(algo)

    def _trigger(self, algo: AlgoOrder) -> None:
        ts = now_ms()
        algo.trigger_time = ts
        algo.update_time = ts
        qty = self._algo_execution_quantity(algo)
        if qty <= 0:
            algo.status = "EXPIRED"
            algo.reject_reason = "Reduce Only reject"
            self.publish(self._algo_event(algo))
            return
        algo.status = "TRIGGERED"
        self.publish(self._algo_event(algo))
        req = OrderRequest(
            symbol=algo.symbol,
            side=algo.side,
            type="MARKET",
            quantity=qty,
            trigger_price=algo.trigger_price,
            reduce_only=algo.reduce_only or algo.close_position,
            close_position=algo.close_position,
            working_type=algo.working_type,
            client_id=f"{algo.client_algo_id}"[:36],
        )
        order = self._record_order(req, orig_type=algo.order_type)
        self.publish(self._order_event(order, "NEW"))
        self._execute(order, self._taker_price(req))
        algo.actual_order_id = order.order_id
        algo.fill_price = order.avg_price
        algo.fill_qty = order.executed_qty
        algo.status = "FINISHED"
        algo.update_time = now_ms()
        self.publish(self._algo_event(algo))

    def _algo_execution_quantity(self, algo: AlgoOrder) -> Decimal:
        if algo.close_position:
            return self.reducible(algo.symbol, algo.side)
        if algo.reduce_only:
            return min(algo.quantity, self.reducible(algo.symbol, algo.side))
        return algo.quantity

    def find_algo(self, algo_id: int | None, client_id: str | None) -> AlgoOrder:
        if algo_id is not None:
            algo = self.ledger.algo_orders.get(algo_id)
            if algo is not None:
                return algo
            raise errors.QUERY_UNKNOWN
        found = self.ledger.latest_algo(client_id) if client_id else None
        if found is not None:
            return found
        raise errors.QUERY_UNKNOWN

    def cancel_algo(self, algo_id: int | None, client_id: str | None) -> AlgoOrder:
        try:
            algo = self.find_algo(algo_id, client_id)
        except SimError as exc:
            raise errors.CANCEL_UNKNOWN from exc
        if not algo.is_open:
            raise errors.CANCEL_UNKNOWN
        algo.status = "CANCELED"
        algo.update_time = now_ms()
        self.publish(self._algo_event(algo))
        return algo

    def cancel_all_algo(self, symbol: str) -> int:
        self.market(symbol)
        open_ids = [a.algo_id for a in self.open_algo_orders(symbol)]
        for algo_id in open_ids:
            self.cancel_algo(algo_id, None)
        return len(open_ids)

    def open_algo_orders(self, symbol: str | None) -> list[AlgoOrder]:
        return [a for a in self.ledger.open_algos() if symbol is None or a.symbol == symbol]

    def _algo_event(self, algo: AlgoOrder) -> Event:
        ts = now_ms()
        return {"e": "ALGO_UPDATE", "T": ts, "E": ts, "o": algo.to_event()}
