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
from enum import StrEnum

from core.domain.numbers import ZERO
from core.domain.sides import OrderSide, Side

# --- the engine's order vocabulary and the ledger's state machine ---------------------------


class OrderPurpose(StrEnum):
    """Why the engine sent an order (the ledger's ``purpose``, a client id's letter)."""

    ENTRY = "entry"
    STOP = "stop"  # the opening stop (seq 0) and trailing's moves (seq 1, 2, ...)
    CLOSE = "close"
    ROLLBACK = "rollback"
    EMERGENCY = "emergency"
    PROTECTION = "protection"
    AGED = "aged"


ORDER_PURPOSES: tuple[str, ...] = tuple(p.value for p in OrderPurpose)
#: the purposes of the orders that protect a position: the opening stop and trailing's
#: moves, protection's replacement, the rollback's emergency stop
STOP_PURPOSES: tuple[str, ...] = (
    OrderPurpose.STOP.value,
    OrderPurpose.PROTECTION.value,
    OrderPurpose.EMERGENCY.value,
)


class OrderStatus(StrEnum):
    INTENT = "intent"  # recorded, maybe sent: look it up by client id before anything else
    OPEN = "open"
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # never reached the exchange (or refused by it)
    EXPIRED = "expired"
    UNKNOWN = "unknown"


Os = OrderStatus
ORDER_STATUSES: tuple[str, ...] = tuple(s.value for s in OrderStatus)
_FILLS = frozenset({Os.PARTIALLY_FILLED, Os.FILLED})
_ENDED = frozenset({Os.CANCELLED, Os.EXPIRED})

#: The ledger's allowed moves, as data. Why a table: the ledger's upsert used to overwrite
#: whatever it found, so a late answer (``open`` after ``filled``, ``intent`` after ``open``)
#: could move a stored status backwards and make a filled stop look live. Late fills are
#: allowed: a cancel or expiry can race the fill the venue already did, and a refusal thought
#: final (``rejected``) can turn out to have landed. ``rejected -> intent`` is the one way
#: back: a refusal known not to have executed (429) is sent again under the same id.
ORDER_MOVES: dict[OrderStatus, frozenset[OrderStatus]] = {
    Os.INTENT: frozenset(OrderStatus) - {Os.INTENT},
    Os.UNKNOWN: frozenset(OrderStatus) - {Os.INTENT, Os.UNKNOWN},
    Os.OPEN: frozenset({Os.PARTIALLY_FILLED, Os.FILLED, Os.CANCELLED, Os.EXPIRED}),
    Os.PARTIALLY_FILLED: frozenset({Os.FILLED, Os.CANCELLED, Os.EXPIRED}),
    Os.FILLED: frozenset(),
    Os.CANCELLED: _FILLS,
    Os.EXPIRED: _FILLS,
    Os.REJECTED: frozenset({Os.INTENT, Os.OPEN}) | _FILLS | _ENDED,
}
TERMINAL_ORDER_STATUSES = frozenset(s for s, moves in ORDER_MOVES.items() if not moves)


def order_move_allowed(old: OrderStatus | str, new: OrderStatus | str) -> bool:
    """Whether the ledger may move from ``old`` to ``new`` (staying put always may)."""
    old, new = OrderStatus(old), OrderStatus(new)
    return old is new or new in ORDER_MOVES[old]


def next_order_status(old: OrderStatus | str | None, new: OrderStatus | str) -> OrderStatus:
    """The status the ledger keeps: ``new`` if the move is allowed (or the row is new), else
    ``old`` (the caller records the refused move)."""
    if old is None or order_move_allowed(old, new):
        return OrderStatus(new)
    return OrderStatus(old)


def status_from_exchange(exchange_status: str | None, *, filled: bool = False) -> OrderStatus:
    """The ledger's status for what the venue reports (ccxt's unified order status);
    ``None``: the venue never heard of the order."""
    if exchange_status is None:
        return Os.REJECTED
    if filled or exchange_status == "closed":
        return Os.FILLED
    return {
        "open": Os.OPEN,
        "canceled": Os.CANCELLED,
        "cancelled": Os.CANCELLED,
        "expired": Os.EXPIRED,
        "rejected": Os.REJECTED,
    }.get(exchange_status, Os.EXPIRED)


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
    def needs_a_position(self) -> bool:
        """Only makes sense beside a position: a closing or a conditional order. Without a
        position on its symbol it is an orphan (the zombie cleaner's ``no_position``, the
        invariants' ``orphan_order``)."""
        return self.is_closing or self.is_conditional

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


def less_than_a_lot(difference: Decimal, step: Decimal = ZERO) -> bool:
    """A quantity difference that is rounding, not a position change: none, or (with the
    venue's lot ``step``) strictly less than one step.

    Venue quantities are whole multiples of the step, so a real difference is at least one
    step. A tolerance of a whole step would hide a whole lot: on a symbol traded in whole
    units a stop for 3 would "cover" a position of 4, a quarter of it unprotected.
    """
    return difference <= ZERO or difference < step


def covers(order: ExchangeOrder, quantity: Decimal, step: Decimal = ZERO) -> bool:
    """The stop closes the whole ``quantity`` (closePosition stops always do); a shortfall
    of less than one lot ``step`` is rounding (``less_than_a_lot``)."""
    return order.close_position or less_than_a_lot(quantity - order.quantity, step)


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
