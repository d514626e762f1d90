"""What the chaos run measures of a position that has only just become active.

``trailing_after_activation`` (a recovery clock in the report): seconds from the price of a
freshly activated position being driven 3 % in its favour to its trailing stop reacting
(activated, or a move). Its bands are published in the step that activates it, so the
ingest watches it from its first tick (bound 1 s); before that it waited for the next
trailing sweep (up to 15 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from core.db.models import Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import TERMINAL

if TYPE_CHECKING:
    from shell.harness.chaos_faults import Chaos

FRESH = timedelta(seconds=20)  # "right after activation"


def _fresh_position(exchange: str) -> tuple[int, str, str] | None:
    """The venue's newest active position whose trailing stop was created moments ago,
    untouched (with two venues, the other venue's positions are not this run's to drive)."""
    with unit_of_work() as s:
        row = s.execute(
            select(Position.id, Position.symbol, Position.side)
            .join(TrailingStop, TrailingStop.position_id == Position.id)
            .where(
                Position.status == "active",
                Position.exchange == exchange,
                TrailingStop.state == "inactive",
                TrailingStop.update_count == 0,
                TrailingStop.created_at >= datetime.now(UTC) - FRESH,
            )
            .order_by(TrailingStop.created_at.desc())
            .limit(1)
        ).first()
    return None if row is None else (row[0], row[1], row[2])


def _reacted(position_id: int) -> Callable[[], bool]:
    def done() -> bool:
        with unit_of_work() as s:
            row = s.execute(
                select(TrailingStop.state, TrailingStop.update_count, Position.status)
                .join(Position, Position.id == TrailingStop.position_id)
                .where(TrailingStop.position_id == position_id)
            ).first()
        return row is None or row[0] != "inactive" or row[1] > 0 or row[2] != "active"

    return done


def _free_symbols(symbols: list[str], exchange: str) -> list[str]:
    """The venue's symbols with no position in progress (a signal for them can open one)."""
    with unit_of_work() as s:
        ended = [status.value for status in TERMINAL]
        taken = set(
            s.scalars(
                select(Position.symbol).where(
                    Position.status.not_in(ended), Position.exchange == exchange
                )
            )
        )
    return [symbol for symbol in symbols if symbol not in taken]


def trend_after_activation(chaos: Chaos, symbols: list[str], wait_s: float = 45.0) -> bool:
    """Take a position the moment it is active (signalling free symbols until one opens),
    and trend it 3 % in its favour."""
    venue = chaos.system.venue
    found = _fresh_position(venue)
    deadline = time.monotonic() + wait_s
    next_signal = time.monotonic()
    while found is None and time.monotonic() < deadline:
        if time.monotonic() >= next_signal:
            free = _free_symbols(symbols, venue)
            if free:
                chaos.system.emit([(symbol, "BUY", 95) for symbol in free[:2]])
            next_signal = time.monotonic() + float(chaos.system.settings.wave_interval)
        time.sleep(0.2)
        found = _fresh_position(venue)
    if found is None:
        chaos.say("trend after activation: no position became active in time")
        return False
    position_id, symbol, side = found
    factor = Decimal("1.03") if side == "long" else Decimal("0.97")
    target = chaos.price(symbol) * factor
    chaos.system.admin("/_sim/path", {"symbol": symbol, "target": str(target), "seconds": 0.3})
    chaos.say(f"{symbol} just became active: price driven 3 % in its favour")
    # the next fault waits for this measure: none of them may fall inside it
    chaos._clock("trailing_after_activation", _reacted(position_id), limit=30.0).join(31.0)
    return True
