"""What the chaos run measures after a worker dies mid-work (``vigil chaos`` report).

- ``stop_move_next_move``: seconds from a SIGKILL during a trailing move to the symbol's
  next move (the dead run's lock and pending flag must free the symbol: bound 10 s);
- ``live_stops_10s_after_kill``: how many stops that symbol has live 10 s after the kill
  (the next holder adopts or cancels the dead run's stop: at most 1);
- ``opening_stop_live``: seconds from a SIGKILL during an opening to that position being
  protected (active, its stop live) or ended (bound 15 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import func, select

from core.db.models import Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import INTERMEDIATE
from core.exchange.adapter import ExchangeAdapter

_INTERMEDIATE = [s.value for s in INTERMEDIATE]


def move_in_flight(symbol: str) -> bool:
    """A stop move of the symbol's active position is sent but not yet recorded."""
    with unit_of_work() as s:
        return bool(
            s.scalar(
                select(func.count())
                .select_from(Order)
                .join(Position, Position.id == Order.position_id)
                .where(
                    Position.symbol == symbol,
                    Position.status == "active",
                    Order.status == "intent",
                )
            )
        )


def update_count(symbol: str) -> int:
    with unit_of_work() as s:
        value = s.scalar(
            select(TrailingStop.update_count)
            .join(Position, Position.id == TrailingStop.position_id)
            .where(Position.symbol == symbol, Position.status == "active")
        )
    return int(value or 0)


def next_move(symbol: str, count_at_kill: int) -> Callable[[], bool]:
    """Done when the symbol's stop moved after the kill (or its position ended)."""

    def done() -> bool:
        with unit_of_work() as s:
            active = s.scalar(
                select(func.count())
                .select_from(Position)
                .where(Position.symbol == symbol, Position.status == "active")
            )
        return not active or update_count(symbol) > count_at_kill

    return done


def opening_settled(symbol: str) -> Callable[[], bool]:
    """Done when the symbol's opening is no longer half done (protected, or ended)."""

    def done() -> bool:
        with unit_of_work() as s:
            return not s.scalar(
                select(func.count())
                .select_from(Position)
                .where(Position.symbol == symbol, Position.status.in_(_INTERMEDIATE))
            )

    return done


def count_stops_later(
    exchange: ExchangeAdapter,
    symbol: str,
    delay_s: float,
    into: list[int],
    threads: list[threading.Thread],
) -> None:
    """After ``delay_s``, append the number of live stops of ``symbol`` to ``into``."""

    def run() -> None:
        threading.Event().wait(delay_s)
        try:
            orders = exchange.open_orders(symbol)
        except Exception:  # noqa: BLE001 - the exchange may be faulted now: not counted
            return
        into.append(sum(1 for o in orders if o.conditional and o.reduce_only))

    thread = threading.Thread(target=run, name=f"stops-after-kill-{symbol}", daemon=True)
    thread.start()
    threads.append(thread)
