"""The matching engine and account of the paper exchange (one account, one-way mode).

Semantics follow Binance USD-M where they matter to a risk engine:

* MARKET orders fill at once at mark price +/- slippage, taker fee; LIMIT orders rest and
  fill at their price when the mark price crosses it, maker fee (marketable LIMIT orders
  fill at once as taker at the better of limit and mark).
* Conditional orders (STOP_MARKET, TAKE_PROFIT_MARKET) live in the separate algo book
  (sim/algo_book.py), trigger on the mark price and then execute as MARKET orders. One
  that would trigger at once is refused with -2021.
* `reduceOnly` never opens or increases a position (-2022 at placement for plain orders;
  a triggered reduce-only or closePosition algo order with nothing to reduce expires).
* Conditional orders are NOT cancelled when their position goes to zero; they stay open
  until cancelled or triggered (then they expire). Cleaning them is the engine's job.

All money is Decimal. The engine is synchronous and runs on the server's event loop, so
no locking is needed; `publish` receives user-data events for the WebSocket layer.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sim import errors, views
from sim.account import (
    EngineConfig,
    MarginAccount,
    capped_by_limit,
    crosses,
    executable_quantity,
)
from sim.algo_book import ALGO_ID_BASE, AlgoBook, Event
from sim.errors import SimError
from sim.markets import Market
from sim.orders import (
    ZERO,
    Fill,
    Ledger,
    Order,
    OrderRequest,
    Position,
    fmt,
    now_ms,
)
from sim.prices import PriceBook

ORDER_ID_BASE = 4_000_000_000
TRADE_ID_BASE = 900_000_000


def _sign(side: str) -> Decimal:
    return Decimal(1) if side == "BUY" else Decimal(-1)


class Engine(AlgoBook, MarginAccount):
    """Account state plus order books; every state change publishes user-data events.

    The plain orders and the account are here; the algo book (conditional orders) is
    ``AlgoBook`` (sim/algo_book.py).
    """

    def __init__(
        self,
        markets: dict[str, Market],
        prices: PriceBook,
        config: EngineConfig,
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        self.markets = markets
        self.prices = prices
        self.config = config
        self.publish: Callable[[Event], None] = publish or (lambda _event: None)
        self.wallet = config.balance
        self.dual_side = False
        self.positions: dict[str, Position] = {}
        self.ledger = Ledger()
        self._next_order = ORDER_ID_BASE
        self._next_algo = ALGO_ID_BASE
        self._next_trade = TRADE_ID_BASE

    # -- lookups --------------------------------------------------------------------

    def market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise errors.BAD_SYMBOL
        return market

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = Position(symbol, leverage=self.config.default_leverage)
            self.positions[symbol] = pos
        return pos

    def order_margin(self) -> Decimal:
        """Open orders that are not reduce-only hold margin (algo orders hold none)."""
        total = ZERO
        for order in self.ledger.open_orders():
            if not order.reduce_only:
                lev = self.position(order.symbol).leverage
                total += order.remaining * order.price / lev
        return total

    def _new_order_id(self) -> int:
        self._next_order += 1
        return self._next_order

    # -- placement ------------------------------------------------------------------

    def validate_quantity(self, market: Market, qty: Decimal, *, market_order: bool) -> None:
        if qty <= 0:
            raise errors.QTY_ZERO
        if qty < market.min_qty:
            raise errors.QTY_MIN
        if qty % market.step_size != 0:
            raise errors.PRECISION
        if qty > (market.market_max_qty if market_order else market.max_qty):
            raise errors.QTY_MAX

    def validate_price(self, market: Market, price: Decimal) -> None:
        if price <= 0 or price % market.tick_size != 0:
            raise errors.PRICE_TICK

    def _check_client_id(self, client_id: str) -> None:
        if any(order.client_id == client_id for order in self.ledger.open_orders()):
            raise errors.DUPLICATE_CLIENT_ID
        # at most one open algo order per client id (this check), so the newest is the one
        algo = self.ledger.latest_algo(client_id)
        if algo is not None and algo.is_open:
            raise errors.DUPLICATE_CLIENT_ID

    def _check_position_side(self, req: OrderRequest) -> None:
        if self.dual_side or req.position_side != "BOTH":
            raise SimError(-4061, "Order's position side does not match user's setting.")

    def opening_quantity(self, symbol: str, side: str, qty: Decimal) -> Decimal:
        """How much of an order would open or increase exposure (the rest closes)."""
        amount = self.position(symbol).amount
        if amount == 0 or (amount > 0) == (side == "BUY"):
            return qty
        return max(ZERO, qty - abs(amount))

    def reducible(self, symbol: str, side: str) -> Decimal:
        """Quantity a reduce-only order on `side` may execute (0 if it would increase)."""
        amount = self.position(symbol).amount
        if amount == 0 or (amount > 0) == (side == "BUY"):
            return ZERO
        return abs(amount)

    def _check_margin(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        opening = self.opening_quantity(symbol, side, qty)
        if opening <= 0:
            return
        if not self.affords(opening, price, self.position(symbol).leverage):
            raise errors.MARGIN

    def place_order(
        self,
        req: OrderRequest,
        *,
        defer_fill: bool = False,
        fill_fraction: Decimal | None = None,
    ) -> Order:
        """A plain (MARKET/LIMIT) order. `defer_fill` leaves a MARKET order NEW for a
        later `fill_deferred`; `fill_fraction` fills only part and expires the rest."""
        market = self.market(req.symbol)
        self._check_position_side(req)
        if req.type not in ("MARKET", "LIMIT"):
            raise errors.USE_ALGO if req.type in _CONDITIONAL else errors.BAD_ORDER_TYPE
        self.validate_quantity(market, req.quantity, market_order=req.type == "MARKET")
        if req.type == "LIMIT":
            if req.price is None:
                raise errors.missing("price")
            self.validate_price(market, req.price)
        if req.client_id:
            self._check_client_id(req.client_id)
        exec_price = self._taker_price(req)
        self._check_rules(market, req, exec_price)
        order = self._record_order(req)
        self.publish(self._order_event(order, "NEW"))
        if req.type == "LIMIT" and not self._marketable(req):
            return order
        if defer_fill:
            return order
        self._execute(order, exec_price, fraction=fill_fraction)
        return order

    def _check_rules(self, market: Market, req: OrderRequest, exec_price: Decimal) -> None:
        if req.reduce_only:
            if self.reducible(req.symbol, req.side) <= 0:
                raise errors.REDUCE_ONLY
            return
        opening = self.opening_quantity(req.symbol, req.side, req.quantity) > 0
        if opening and not market.trading:
            raise errors.NOT_TRADING
        if req.time_in_force == "GTX" and req.type == "LIMIT" and self._marketable(req):
            raise errors.POST_ONLY
        if req.quantity * exec_price < market.min_notional:
            raise errors.min_notional(market.min_notional)
        self._check_margin(req.symbol, req.side, req.quantity, exec_price)

    def _taker_price(self, req: OrderRequest) -> Decimal:
        buying = req.side == "BUY"
        price = self.config.taker_price(self.prices, req.symbol, buying=buying)
        if req.type == "LIMIT" and req.price is not None:
            return capped_by_limit(price, req.price, buying=buying)
        return price

    def _marketable(self, req: OrderRequest) -> bool:
        if req.price is None:
            return True
        return crosses(req.price, self.mark(req.symbol), buying=req.side == "BUY")

    def _record_order(self, req: OrderRequest, orig_type: str | None = None) -> Order:
        ts = now_ms()
        order = Order(
            order_id=self._new_order_id(),
            client_id=req.client_id or f"sim-{self._next_order}",
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            orig_type=orig_type or req.type,
            quantity=req.quantity,
            price=req.price if req.type == "LIMIT" and req.price is not None else ZERO,
            time=ts,
            update_time=ts,
            reduce_only=req.reduce_only,
            close_position=req.close_position,
            stop_price=req.trigger_price or ZERO,
            time_in_force=req.time_in_force,
            working_type=req.working_type,
            price_protect=req.price_protect,
        )
        self.ledger.add_order(order)
        return order

    # -- execution ------------------------------------------------------------------

    def _execute(
        self,
        order: Order,
        price: Decimal,
        *,
        maker: bool = False,
        fraction: Decimal | None = None,
    ) -> None:
        reducible = self.reducible(order.symbol, order.side) if order.reduce_only else None
        step = self.market(order.symbol).step_size
        qty = executable_quantity(order.remaining, reducible, fraction, step)
        if reducible is not None and fraction is None and qty > 0:
            # Binance shrinks an oversized reduce-only order to the position size.
            order.quantity = order.executed_qty + qty
        if qty > 0:
            self._fill(order, qty, price, maker)
        if order.remaining <= 0:
            order.status = "FILLED"
        elif fraction is not None or order.type == "MARKET" or order.reduce_only:
            # The unfillable rest of a market/IOC-like order expires, as on Binance.
            order.status = "EXPIRED"
            order.update_time = now_ms()
            self.publish(self._order_event(order, "EXPIRED"))

    def _fill(self, order: Order, qty: Decimal, price: Decimal, maker: bool) -> None:
        ts = now_ms()
        _, commission = self.config.fee(qty, price, maker=maker)
        pnl = self._apply_to_position(order.symbol, order.side, qty, price, ts)
        self.wallet += pnl - commission
        self._next_trade += 1
        fill = Fill(
            trade_id=self._next_trade,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            quantity=qty,
            commission=commission,
            realized_pnl=pnl,
            maker=maker,
            time=ts,
        )
        self.ledger.fills.append(fill)
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.update_time = ts
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        self.publish(self._account_event(order.symbol, ts))
        self.publish(self._order_event(order, "TRADE", fill))

    def _apply_to_position(
        self, symbol: str, side: str, qty: Decimal, price: Decimal, ts: int
    ) -> Decimal:
        """Update the one-way position; returns the realized PnL of the closed part."""
        return apply_fill(self.position(symbol), side, qty, price, ts)

    def fill_deferred(self, order_id: int, fraction: Decimal | None = None) -> None:
        """Complete a MARKET order that a delayed-fill fault left NEW."""
        order = self.ledger.orders.get(order_id)
        if order is None or not order.is_open:
            return
        self._execute(order, self._taker_price(_as_request(order)), fraction=fraction)

    def on_prices(self, symbols: list[str]) -> None:
        """Evaluate triggers and resting limit orders after a price change."""
        if not symbols:
            return
        moved = set(symbols)
        self.fire_triggered(moved)
        for order in self.ledger.open_orders():
            if order.is_open and order.type == "LIMIT" and order.symbol in moved:
                if self._marketable(_as_request(order)):
                    self._execute(order, order.price, maker=True)

    # -- cancel / query -------------------------------------------------------------

    def find_order(self, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        self.market(symbol)
        if order_id is not None:
            order = self.ledger.orders.get(order_id)
            if order is not None and order.symbol == symbol:
                return order
            raise errors.QUERY_UNKNOWN
        found = self.ledger.latest_order(symbol, client_id) if client_id else None
        if found is not None:
            return found
        raise errors.QUERY_UNKNOWN

    def cancel_order(self, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        try:
            order = self.find_order(symbol, order_id, client_id)
        except SimError as exc:
            if exc.code == errors.QUERY_UNKNOWN.code:
                raise errors.CANCEL_UNKNOWN from exc
            raise
        if not order.is_open:
            raise errors.CANCEL_UNKNOWN
        order.status = "CANCELED"
        order.update_time = now_ms()
        self.publish(self._order_event(order, "CANCELED"))
        return order

    def cancel_all(self, symbol: str) -> int:
        self.market(symbol)
        open_ids = [o.order_id for o in self.open_orders(symbol)]
        for order_id in open_ids:
            self.cancel_order(symbol, order_id, None)
        return len(open_ids)

    def open_orders(self, symbol: str | None) -> list[Order]:
        return [o for o in self.ledger.open_orders() if symbol is None or o.symbol == symbol]

    # -- account settings -----------------------------------------------------------

    def set_leverage(self, symbol: str, leverage: int) -> Position:
        market = self.market(symbol)
        if not 1 <= leverage <= market.max_leverage:
            raise SimError(-4028, f"Leverage {leverage} is not valid")
        pos = self.position(symbol)
        pos.leverage = leverage
        return pos

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        self.market(symbol)
        wanted = {"ISOLATED": "isolated", "CROSSED": "cross"}.get(margin_type.upper())
        if wanted is None:
            raise SimError(-1116, "Invalid marginType.")
        pos = self.position(symbol)
        if pos.margin_type == wanted:
            raise errors.no_need("margin")
        if pos.amount or self.open_orders(symbol):
            raise SimError(-4048, "Margin type cannot be changed if there exists position.")
        pos.margin_type = wanted

    def set_dual_side(self, dual: bool) -> None:
        if dual == self.dual_side:
            raise errors.no_need("position_side")
        if any(p.amount for p in self.positions.values()) or self.open_orders(None):
            raise SimError(-4068, "The position side cannot be changed if there exists position.")
        self.dual_side = dual

    # -- admin ("by hand") ----------------------------------------------------------

    def force_fill(self, symbol: str, side: str, qty: Decimal) -> Order:
        """Trade at mark as if done by hand in the UI: no margin or notional checks."""
        market = self.market(symbol)
        self.validate_quantity(market, qty, market_order=False)
        req = OrderRequest(symbol=symbol, side=side, type="MARKET", quantity=qty)
        order = self._record_order(req)
        order.client_id = f"web_{order.order_id}"
        self.publish(self._order_event(order, "NEW"))
        self._execute(order, self.mark(symbol))
        return order

    def close_by_hand(self, symbol: str) -> Order | None:
        self.market(symbol)
        amount = self.position(symbol).amount
        if amount == 0:
            return None
        side = "SELL" if amount > 0 else "BUY"
        req = OrderRequest(
            symbol=symbol, side=side, type="MARKET", quantity=abs(amount), reduce_only=True
        )
        order = self._record_order(req)
        order.client_id = f"web_{order.order_id}"
        self.publish(self._order_event(order, "NEW"))
        self._execute(order, self.mark(symbol))
        return order

    # -- events ---------------------------------------------------------------------

    def _order_event(self, order: Order, execution: str, fill: Fill | None = None) -> Event:
        ts = now_ms()
        return {
            "e": "ORDER_TRADE_UPDATE",
            "E": ts,
            "T": ts,
            "o": order.to_event(execution, fill, ts),
        }

    def _account_event(self, symbol: str, ts: int) -> Event:
        pos = self.position(symbol)
        return {
            "e": "ACCOUNT_UPDATE",
            "E": ts,
            "T": ts,
            "a": {
                "m": "ORDER",
                "B": [{"a": "USDT", "wb": fmt(self.wallet), "cw": fmt(self.wallet), "bc": "0"}],
                "P": [
                    {
                        "s": symbol,
                        "pa": fmt(pos.amount),
                        "ep": fmt(pos.entry_price),
                        "bep": fmt(views.break_even(self, pos)),
                        "cr": "0",
                        "up": fmt(self.unrealized(pos)),
                        "mt": pos.margin_type,
                        "iw": "0",
                        "ps": "BOTH",
                        "ma": "USDT",
                    }
                ],
            },
        }


_CONDITIONAL = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)


def apply_fill(pos: Position, side: str, qty: Decimal, price: Decimal, ts: int) -> Decimal:
    """Apply one fill (side BUY/SELL) to a signed position; returns the realized PnL of the
    closed part. Average entry on increase; a flip reopens the rest at the fill price.
    Shared by every dialect's account (Bybit's hedge slots are signed positions too)."""
    signed = qty * _sign(side)
    pos.update_time = ts
    if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
        total = abs(pos.amount) + qty
        pos.entry_price = (abs(pos.amount) * pos.entry_price + qty * price) / total
        pos.amount += signed
        return ZERO
    closing = min(qty, abs(pos.amount))
    direction = Decimal(1) if pos.amount > 0 else Decimal(-1)
    pnl = closing * (price - pos.entry_price) * direction
    pos.amount += signed
    if pos.amount == 0:
        pos.entry_price = ZERO
    elif (pos.amount > 0) != (direction > 0):
        pos.entry_price = price  # flipped: the rest opened at this price
    return pnl


def _as_request(order: Order) -> OrderRequest:
    return OrderRequest(
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.remaining,
        price=order.price if order.type == "LIMIT" else None,
        reduce_only=order.reduce_only,
    )
