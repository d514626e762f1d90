"""The operator's view of the book: what one line and the totals say, as pure functions.

Why here and not in the page: the numbers an operator acts on (is this position protected,
how far is its stop, what does it owe) must be computed one way and tested on plain values.
The console (core/api/console) only reads rows, calls these and escapes the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.domain.numbers import HUNDRED, ZERO
from core.domain.orders import ExchangeOrder, covers, stops_for
from core.domain.sides import Side

# who placed the live stop, from the purpose in its client id (core/exchange/client_ids.py)
OWNER_ENTRY, OWNER_TRAILING, OWNER_PROTECTION, OWNER_FOREIGN = (
    "entry",
    "trailing",
    "protection",
    "foreign",
)


def stop_owner(purpose: str | None, seq: int) -> str:
    """``stop`` seq 0 is the opening's stop, a later seq a trailing move; ``protection``'s own."""
    if purpose == "protection":
        return OWNER_PROTECTION
    if purpose == "stop":
        return OWNER_ENTRY if seq == 0 else OWNER_TRAILING
    return OWNER_FOREIGN


def unrealised_pnl(
    side: str, quantity: Decimal, entry: Decimal | None, mark: Decimal | None
) -> Decimal | None:
    if entry is None or mark is None:
        return None
    move = mark - entry if side == Side.LONG else entry - mark
    return move * quantity


def stop_distance_percent(side: str, stop: Decimal | None, mark: Decimal | None) -> Decimal | None:
    """How far the mark may move against the position before the stop fires (positive = room)."""
    if stop is None or mark is None or mark == ZERO:
        return None
    room = mark - stop if side == Side.LONG else stop - mark
    return room / mark * HUNDRED


@dataclass(frozen=True)
class LiveStop:
    price: Decimal | None
    client_id: str | None
    covers: bool


def live_stop(
    symbol: str, side: str, quantity: Decimal, orders: Sequence[ExchangeOrder]
) -> LiveStop | None:
    """The stop on the exchange protecting this slot; the covering one first, then the newest."""
    stops = stops_for(None, orders, symbol=symbol, side=Side(side))
    if not stops:
        return None
    ranked = sorted(
        stops,
        key=lambda o: (
            covers(o, quantity),
            o.created_at.timestamp() if o.created_at else 0.0,
        ),
        reverse=True,
    )
    best = ranked[0]
    return LiveStop(best.trigger_price, best.client_id, covers(best, quantity))


def judged_by(activated_at: datetime | None, orders_read_at: datetime | None) -> bool:
    """Can a read of the open orders say this position lacks a stop? Not when the position
    became active after the read (its stop was placed after it too): the read is cached a
    few seconds, and a fresh position must not be called unprotected for that."""
    if activated_at is None or orders_read_at is None:
        return orders_read_at is not None
    return activated_at <= orders_read_at


def unprotected_seconds(
    is_unprotected: bool, since: datetime | None, first_seen: datetime | None, now: datetime
) -> float | None:
    """How long a position has had no covering stop: the durable mark, else first sight."""
    if not is_unprotected:
        return None
    start = since or first_seen or now
    return max(0.0, (now - start).total_seconds())


def decimals_of(step: Decimal | None) -> int | None:
    """Decimal places of a tick or step size (0.10 -> 1, 1 -> 0); None when unknown."""
    if step is None or step <= ZERO:
        return None
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else None


def format_number(value: Decimal | None, places: int | None, *, sign: bool = False) -> str:
    """Fixed places when the market's precision is known, else the value without noise."""
    if value is None:
        return "—"
    if places is None:
        text = format(value.normalize(), "f")
    else:
        text = f"{value:.{places}f}"
        if Decimal(text) == ZERO:
            text = f"{ZERO:.{places}f}"  # no "-0.00" for a loss too small to show
    if sign and value > ZERO:
        text = "+" + text
    return text


def format_age(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``, ``3d 04h``: short enough for a table cell."""
    if seconds is None:
        return "—"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class BookLine:
    """What the totals need of one line."""

    status: str
    notional: Decimal | None
    pnl: Decimal | None
    has_stop: bool


@dataclass(frozen=True)
class BookTotals:
    positions: int
    exposure: Decimal
    unrealised_pnl: Decimal
    without_stop: int


def totals(lines: Iterable[BookLine]) -> BookTotals:
    """Only ``active`` positions count as needing a stop (an opening places its own)."""
    count, exposure, pnl, bare = 0, ZERO, ZERO, 0
    for line in lines:
        count += 1
        exposure += line.notional or ZERO
        pnl += line.pnl or ZERO
        if line.status == "active" and not line.has_stop:
            bare += 1
    return BookTotals(count, exposure, pnl, bare)
