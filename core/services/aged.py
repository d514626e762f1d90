"""Aged positions: found on beat, aged through their phases, closed at market by the price path.

Why this shape (seeds/002): the old bot parked LIMIT orders at the aged target. They locked
the position against stop moves, were never sure to fill, and had to be tracked, moved and
cancelled. Here the target is only a *price level*: it is published as the symbol's ``"aged"``
band component, the ingest enqueues a price task the moment the mark reaches it, and
``react`` closes with a reduce-only MARKET order through the single close path
(``closing.close_locked``). Nothing rests on the exchange but the position's stop.

Who does what:

- ``run_aged_cycle`` (beat, every ``aged_interval``): finds active positions older than the
  max age without an active trailing stop and gives each an ``aged_positions`` row; for every
  aged position evaluates the phase at one batch of mark prices (one ``mark_prices()`` call
  per cycle), stores each phase change as an ``aged_position_transitions`` row, republishes
  the band (the target moves with time), and closes what is due (in profit, target reached,
  past the loss cap). It also drops ``"aged"`` band components no aged row stands behind.
- ``react`` (price path, per price task): the same evaluation at the price window's extreme
  in the holder's favour; closes when the window reached the target.

Both work through ``check_position`` under the symbol lock, re-reading everything inside it,
so beat and price tasks on any worker never act on stale state. Everything is in the tables
(phase, target, attempts, last failure), so a restart resumes in the same phase.

A failed close leaves the position active with its stop (``close_locked`` guarantees it);
the attempt is counted, and the next attempt waits ``aged_close_retry_seconds`` doubling up to
``aged_close_retry_max_seconds``: while it waits the band is unbounded until the retry time,
so ticks enqueue nothing and a venue outage is not hammered once per tick. After
``aged_close_alert_attempts`` failures a critical alert is raised (the stop still protects).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select

from core.db.models import AgedPosition, Position, TrailingStop
from core.domain.aged import AgedParams
from core.domain.positions import PositionStatus
from core.domain.sides import Side
from core.domain.trailing import PriceWindow
from core.events import EventType, Severity
from core.exchange import errors
from core.locks import HeldLock, LockLost, LockNotAcquired, StaleFence
from core.services import bands
from core.services.aged_position import (
    COMPONENT,
    AgedOutcome,
    check_position,
    params_from,
)
from core.services.closing import lock_for
from core.services.deps import Deps
from core.services.orphans import drop_orphan_bands


@dataclass
class AgedCycleReport:
    examined: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    prices_unavailable: bool = False
    stale_bands_removed: list[str] = field(default_factory=list)

    def count(self, outcome: AgedOutcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the beat pass ----------------------------------------------------------------------------


def run_aged_cycle(deps: Deps) -> AgedCycleReport:
    """Detect, evaluate, publish and close for every aged (or ageing) position of this exchange."""
    report = AgedCycleReport()
    candidates = _candidates(deps, deps.clock.now(), params_from(deps.settings))
    report.examined = len(candidates)
    marks: dict[str, Decimal] = {}
    if candidates:
        try:
            marks = deps.exchange.mark_prices()  # one batch call per cycle, not one per position
        except errors.ExchangeFailure as exc:
            report.prices_unavailable = True  # phases still advance; emergency still closes
            deps.record_failure_warning(
                EventType.EXCHANGE_ERROR, exc, operation="mark_prices", purpose="aged positions"
            )
    for position_id, symbol in candidates:
        report.count(_check_on_beat(deps, position_id, symbol, marks.get(symbol)))
    report.stale_bands_removed = _remove_stale_bands(deps)
    return report


def _candidates(deps: Deps, now: datetime, params: AgedParams) -> list[tuple[int, str]]:
    """Positions with an aged row, and active ones old enough without an active trailing stop.

    A loose pre-filter outside the lock; ``check_position`` decides exactly, under it.
    """
    opened = func.coalesce(Position.opened_at, Position.created_at)
    trailing_not_active = or_(TrailingStop.state.is_(None), TrailingStop.state != "active")
    with deps.unit_of_work() as session:
        rows = session.execute(
            select(Position.id, Position.symbol)
            .outerjoin(TrailingStop, TrailingStop.position_id == Position.id)
            .outerjoin(AgedPosition, AgedPosition.position_id == Position.id)
            .where(
                Position.exchange == deps.exchange_name,
                or_(
                    AgedPosition.position_id.is_not(None)
                    & Position.status.in_([PositionStatus.ACTIVE, PositionStatus.CLOSING]),
                    (Position.status == PositionStatus.ACTIVE)
                    & (opened <= now - params.max_age)
                    & trailing_not_active,
                ),
            )
            .order_by(Position.id)
        ).all()
    return [(int(pid), str(symbol)) for pid, symbol in rows]


def _check_on_beat(deps: Deps, position_id: int, symbol: str, mark: Decimal | None) -> AgedOutcome:
    try:
        with lock_for(deps, deps.exchange_name, symbol) as held:
            return check_position(
                deps, held, position_id, mark, deps.clock.now(), detect=True, source="beat"
            )
    except LockNotAcquired:
        return AgedOutcome.BUSY
    except (LockLost, StaleFence, errors.ExchangeFailure) as exc:
        # a newer holder took over (it decides, we stop), or one symbol's exchange trouble,
        # which must not stop the others
        exchange_trouble = isinstance(exc, errors.ExchangeFailure)
        deps.record_failure_warning(
            EventType.EXCHANGE_ERROR if exchange_trouble else EventType.LOCK_STALE_WRITE_REJECTED,
            exc,
            symbol=symbol,
            position_id=position_id,
            purpose="aged positions",
        )
        return AgedOutcome.EXCHANGE_ERROR if exchange_trouble else AgedOutcome.BUSY


# --- the price path ---------------------------------------------------------------------------


def react(
    deps: Deps, held: HeldLock, position: Position, window: PriceWindow, now: datetime
) -> bool:
    """Price-path reaction: close an aged position whose target the window reached (True).

    Called by the price task with the symbol lock held and no transaction open. The window's
    extreme in the holder's favour (high for a long, low for a short) is the price that
    "reached" the level, as a stop triggers on touch; the close itself is at market.
    """
    mark = window.high if position.side == Side.LONG else window.low
    outcome = check_position(deps, held, position.id, mark, now, detect=False, source="price")
    return outcome is AgedOutcome.CLOSED


# --- bands --------------------------------------------------------------------------------------


def _remove_stale_bands(deps: Deps) -> list[str]:
    """Drop ``"aged"`` components with no aged row behind them (a close elsewhere ended it).

    The close paths' ``finish`` deletes the aged row but does not know about bands; a band left
    behind would make the ingest enqueue useless price tasks for that symbol. Aged rows are
    created under the symbol lock, which the removal takes (``drop_orphan_bands``).
    """
    exchange = deps.exchange_name
    watched = [
        symbol
        for symbol in bands.tracked_symbols(deps.redis, exchange)
        if COMPONENT in bands.components(deps.redis, exchange, symbol)
    ]
    removed, _busy = drop_orphan_bands(
        deps,
        watched,
        lambda symbols: (
            select(Position.symbol)
            .join(AgedPosition, AgedPosition.position_id == Position.id)
            .where(Position.exchange == exchange, Position.symbol.in_(symbols))
        ),
        lambda _symbol: [COMPONENT],
    )
    for symbol in removed:
        deps.record_alone(
            EventType.CLEANUP_ACTION,
            severity=Severity.INFO,
            exchange=exchange,
            symbol=symbol,
            action="stale aged band removed",
        )
    return removed
