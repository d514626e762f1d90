"""Exchange truth as plain values: open orders, positions, and what counts as a stop.

Why one module: protection ("does this position have a live stop?"), zombie cleanup ("is
this order left over?") and reconciliation must agree on what a stop is. The old bot had
three slightly different answers; one of them did not count a ``closePosition`` stop with
quantity 0, so it placed a second stop next to a working one.

The exchange adapter maps each dialect into these types: ccxt order ``type`` lower-cased
(``market``, ``limit``, ``stop_market``, ``take_profit_market``, ...); ``position_idx`` is
Bybit's ``positionIdx`` (0 one-way, 1 long hedge, 2 short hedge) and Binance's
``positionSide`` mapped the same way (BOTH -> 0, LONG -> 1, SHORT -> 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.domain.sides import OrderSide, Side

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """An open order as the exchange reports it."""

    id: str
    client_id: str | None
    symbol: str
    side: OrderSide
    type: str
    reduce_only: bool
    close_position: bool
    is_conditional: bool
    trigger_price: Decimal | None
    quantity: Decimal
    position_idx: int = 0
    created_at: datetime | None = None
    close_on_trigger: bool = False

    @property
    def is_closing(self) -> bool:
        """Can only reduce a position (reduce-only, closePosition or closeOnTrigger)."""
        return self.reduce_only or self.close_position or self.close_on_trigger

    @property
    def is_take_profit(self) -> bool:
        kind = self.type.lower().replace("-", "_")
        return "take_profit" in kind or "takeprofit" in kind

    @property
    def is_stop_loss(self) -> bool:
        """A conditional closing order that is not a take-profit: a stop-loss."""
        return self.is_conditional and self.is_closing and not self.is_take_profit


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """An open position as the exchange reports it (quantity > 0)."""

    symbol: str
    side: Side
    quantity: Decimal
    entry_price: Decimal
    position_idx: int = 0
    mark_price: Decimal | None = None


def same_position_slot(order: ExchangeOrder, position: ExchangePosition) -> bool:
    """Order and position are on the same symbol and the same position index."""
    return order.symbol == position.symbol and order.position_idx == position.position_idx


def stops_for(
    position: ExchangePosition | None,
    orders: Iterable[ExchangeOrder],
    *,
    symbol: str | None = None,
    side: Side | None = None,
    position_idx: int = 0,
) -> list[ExchangeOrder]:
    """The stop-loss orders that protect a position (given as a position or its slot).

    A stop protects a position when it is a stop-loss on the same symbol and position index
    whose order side closes the position. Quantity is *not* checked here (a
    ``closePosition`` stop reports quantity 0; see ``covers``).
    """
    if position is not None:
        symbol, side, position_idx = position.symbol, position.side, position.position_idx
    if symbol is None or side is None:
        raise ValueError("give a position or symbol and side")
    return [
        o
        for o in orders
        if o.is_stop_loss
        and o.symbol == symbol
        and o.position_idx == position_idx
        and o.side is side.close_order_side
    ]


def covers(order: ExchangeOrder, quantity: Decimal, tolerance: Decimal = ZERO) -> bool:
    """The stop closes the whole ``quantity`` (closePosition stops always do)."""
    return order.close_position or order.quantity >= quantity - tolerance


def _newest_key(order: ExchangeOrder) -> tuple[float, str]:
    ts = order.created_at.timestamp() if order.created_at is not None else float("-inf")
    return (ts, order.id)


def pick_stop(
    stops: Sequence[ExchangeOrder], known_client_ids: frozenset[str] = frozenset()
) -> tuple[ExchangeOrder | None, tuple[ExchangeOrder, ...]]:
    """Which of several stops to keep, and the surplus.

    Keep the engine's own stop (client id known to the engine), the newest of them if
    several (a make-before-break replacement is newer than the stop it replaces); when none
    is known, the newest. Ties break on order id so the choice is deterministic.
    """
    if not stops:
        return None, ()
    ranked = sorted(
        stops,
        key=lambda o: (o.client_id in known_client_ids, *_newest_key(o)),
        reverse=True,
    )
    return ranked[0], tuple(ranked[1:])
