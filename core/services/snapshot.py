"""One batch read of an exchange account, shared by the guardians' cycles.

Why: the old bot asked the exchange for each position's orders one by one, so a guardian
cycle cost a call per position and grew into the rate limit exactly when many positions
were open. Here a cycle starts from one snapshot (all positions: one call; all open orders,
regular and conditional: two calls) and looks at healthy positions no further. Only a
position that needs action is read again, under its symbol lock, because a snapshot is
already stale by the time the lock is taken.

``positions_as_of`` is the clock time just before positions were requested: an order created
after it may belong to a position the snapshot could not show yet (zombie classification
never judges such an order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from core import locks
from core.domain.orders import ExchangeOrder, ExchangePosition
from core.domain.sides import Side
from core.events import EventType, record
from core.exchange.client_ids import of_position, parse_client_id
from core.exchange.errors import ExchangeFailure
from core.exchange.types import OrderSnapshot, PositionSnapshot
from core.locks import HeldLock
from core.services import venue_watch
from core.services.deps import Deps


@dataclass(frozen=True, slots=True)
class ExchangeSnapshot:
    exchange: str
    positions_as_of: datetime
    positions: tuple[PositionSnapshot, ...]
    orders: tuple[OrderSnapshot, ...]

    def position(self, symbol: str, side: Side | str | None = None) -> PositionSnapshot | None:
        """The open position on ``symbol`` (on ``side`` if given), if any."""
        for p in self.positions:
            if p.symbol == symbol and (side is None or p.side == side):
                return p
        return None

    def orders_on(self, symbol: str) -> list[OrderSnapshot]:
        return [o for o in self.orders if o.symbol == symbol]

    def domain_orders(self, symbol: str | None = None) -> list[ExchangeOrder]:
        return [o.to_domain() for o in self.orders if symbol is None or o.symbol == symbol]

    def domain_positions(self, symbol: str | None = None) -> list[ExchangePosition]:
        return [p.to_domain() for p in self.positions if symbol is None or p.symbol == symbol]


def take(deps: Deps, *, with_orders: bool = True) -> ExchangeSnapshot:
    """Positions first, then open orders: an order newer than the position read is then
    recognisable by its creation time (see module doc). Three calls, whatever the count."""
    as_of = deps.clock.now()
    positions = tuple(deps.exchange.positions())
    orders = tuple(deps.exchange.open_orders()) if with_orders else ()
    return ExchangeSnapshot(deps.exchange_name, as_of, positions, orders)


def take_or_record(deps: Deps, guardian: str, *, with_orders: bool = True) -> ExchangeSnapshot:
    """``take``, recording a failed read as an event before it propagates (the task retries).

    Every outcome is reported to core/services/venue_watch.py: a refused key halts openings,
    an outage pauses them, a good answer lifts a maintenance pause; and counted by
    core/services/paging.py: consecutive failed reads page.
    """
    from core.services import paging  # counts consecutive failed reads; pages at N

    try:
        snap = take(deps, with_orders=with_orders)
    except ExchangeFailure as exc:
        venue_watch.note_failure(deps, exc)
        with deps.unit_of_work() as session:
            record(
                session,
                EventType.EXCHANGE_ERROR,
                exchange=deps.exchange_name,
                guardian=guardian,
                operation="snapshot",
                error=str(exc),
            )
            paging.note_read_failure(deps, session, guardian, exc)
        raise
    venue_watch.note_answer(deps)
    paging.note_read_success(deps)
    return snap


def engine_client_ids(
    orders: Iterable[OrderSnapshot], correlation_by_position: Mapping[int, str]
) -> frozenset[str]:
    """Client ids of ``orders`` the engine sent for one of the given positions.

    The id's tag must match the position's correlation id: an id of an earlier database's
    position with the same number is not ours (see core/exchange/client_ids.py).
    """
    known: set[str] = set()
    for order in orders:
        parsed = parse_client_id(order.client_id)
        if parsed is None or order.client_id is None:
            continue
        correlation = correlation_by_position.get(parsed.position_id)
        if correlation is not None and of_position(parsed, correlation):
            known.add(order.client_id)
    return frozenset(known)


def guardian_lock(deps: Deps, symbol: str) -> AbstractContextManager[HeldLock]:
    """The symbol's lock, waited for only briefly (``core.locks.guardian_lock``)."""
    return locks.guardian_lock(deps.redis, deps.settings, deps.exchange_name, symbol)
