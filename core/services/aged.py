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
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import AgedPosition, AgedPositionTransition, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain import aged
from core.domain.aged import AgedDecision, AgedParams, AgedPhase
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.domain.sides import Side
from core.domain.trailing import PriceWindow
from core.events import EventType, Severity, record
from core.exchange import errors
from core.locks import HeldLock, LockLost, LockNotAcquired, StaleFence
from core.services import bands
from core.services.closing import close_locked, lock_for
from core.services.deps import Deps
from core.services.positions import context

COMPONENT = "aged"
CLOSE_REASON = "aged"
STORED_SCALE = Decimal("1e-8")  # Numeric(20, 8): compare targets as they are stored


class AgedOutcome(StrEnum):
    NOT_AGED = "not_aged"  # young, or trailing owns the exit: nothing stored
    WAITING = "waiting"  # aged, target not reached
    RELEASED = "released"  # trailing became active: the aged row was removed
    BACKING_OFF = "backing_off"  # due, but the last close failed recently
    CLOSED = "closed"
    CLOSE_FAILED = "close_failed"  # still active with its stop; counted, retried later
    SKIPPED = "skipped"  # not active (gone, terminal, or another close in progress)
    BUSY = "busy"  # symbol lock busy or lost: the next cycle or tick retries
    EXCHANGE_ERROR = "exchange_error"


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


def params_from(settings: Settings) -> AgedParams:
    return AgedParams(
        max_age=timedelta(hours=float(settings.aged_max_age_hours)),
        grace_period=timedelta(hours=float(settings.aged_grace_hours)),
        loss_step_pct_per_hour=settings.aged_loss_step_percent_per_hour,
        acceleration_factor=settings.aged_acceleration_factor,
        acceleration_after=timedelta(hours=float(settings.aged_acceleration_after_hours)),
        max_loss_pct=settings.aged_max_loss_percent,
        taker_fee_pct=settings.taker_fee_percent,
    )


def band_horizon(settings: Settings) -> timedelta:
    """How long a published band stays valid: two beat cycles, so one late beat is harmless.

    The target only moves toward the price, and the band is the target at the horizon's end,
    so a longer horizon is never wrong, only narrower (a few more no-op price tasks).
    """
    return timedelta(seconds=2 * settings.aged_interval)


def close_retry_at(last_attempt_at: datetime, attempts: int, settings: Settings) -> datetime:
    """When a close that has failed ``attempts`` times may be tried again (doubling backoff)."""
    delay = settings.aged_close_retry_seconds * 2 ** max(attempts - 1, 0)
    return last_attempt_at + timedelta(seconds=min(delay, settings.aged_close_retry_max_seconds))


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
            with unit_of_work() as session:
                record(
                    session,
                    EventType.EXCHANGE_ERROR,
                    severity=Severity.WARNING,
                    exchange=deps.exchange_name,
                    operation="mark_prices",
                    purpose="aged positions",
                    error=str(exc),
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
    with unit_of_work() as session:
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
    except (LockLost, StaleFence) as exc:  # a newer holder took over: it decides, we stop
        with unit_of_work() as session:
            record(
                session,
                EventType.LOCK_STALE_WRITE_REJECTED,
                severity=Severity.WARNING,
                exchange=deps.exchange_name,
                symbol=symbol,
                position_id=position_id,
                purpose="aged positions",
                error=str(exc),
            )
        return AgedOutcome.BUSY
    except errors.ExchangeFailure as exc:  # one symbol's trouble must not stop the others
        with unit_of_work() as session:
            record(
                session,
                EventType.EXCHANGE_ERROR,
                severity=Severity.WARNING,
                exchange=deps.exchange_name,
                symbol=symbol,
                position_id=position_id,
                purpose="aged positions",
                error=str(exc),
            )
        return AgedOutcome.EXCHANGE_ERROR


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


# --- one position, under its symbol lock ------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What the evaluation transaction decided; acted on after it committed."""

    outcome: AgedOutcome
    symbol: str | None = None  # where to publish; None: nothing to publish
    band: PriceBand | None = None  # None: remove the component
    close: bool = False
    decision: AgedDecision | None = None


def check_position(
    deps: Deps,
    held: HeldLock,
    position_id: int,
    mark: Decimal | None,
    now: datetime,
    *,
    detect: bool,
    source: str,
) -> AgedOutcome:
    """Evaluate one position's aged state at ``mark`` and ``now``, store it, act on it.

    The caller holds the symbol lock. ``detect``: may create the aged row (beat); the price
    path only follows rows that exist. Returns what happened.
    """
    with unit_of_work() as session:
        plan = _evaluate_and_store(deps, session, held, position_id, mark, now, detect=detect)
    if plan.symbol is not None:
        bands.publish(deps.redis, deps.exchange_name, plan.symbol, COMPONENT, plan.band)
    if not plan.close:
        return plan.outcome
    assert plan.decision is not None and plan.symbol is not None
    return _close(deps, held, position_id, plan.symbol, plan.decision, mark, now, source)


def _evaluate_and_store(
    deps: Deps,
    session: Session,
    held: HeldLock,
    position_id: int,
    mark: Decimal | None,
    now: datetime,
    *,
    detect: bool,
) -> _Plan:
    settings = deps.settings
    params = params_from(settings)
    row = session.get(AgedPosition, position_id)
    if row is None and not detect:
        return _Plan(AgedOutcome.NOT_AGED)
    position = session.get(Position, position_id)
    if position is None or position.entry_price is None:
        return _Plan(AgedOutcome.SKIPPED)
    status = PositionStatus(position.status)
    # a close of ours that was interrupted (worker died, lost answer) is finished, not re-decided
    resuming = (
        status is PositionStatus.CLOSING
        and position.close_reason == CLOSE_REASON
        and row is not None
    )
    if status is not PositionStatus.ACTIVE and not resuming:
        return _Plan(AgedOutcome.SKIPPED)
    _check_fence(session, position_id, held.token)
    trailing = session.get(TrailingStop, position_id)
    subject = aged.AgedPosition(
        side=Side(position.side),
        entry_price=position.entry_price,
        opened_at=position.opened_at or position.created_at,
        trailing_active=trailing is not None and trailing.state == "active",
    )
    stored = AgedPhase(row.phase) if row is not None else None
    decision = aged.evaluate(subject, stored, mark, now, params)
    if decision.phase is AgedPhase.NOT_AGED:
        if row is None:
            return _Plan(AgedOutcome.NOT_AGED)
        _release(session, position, row, decision, mark, now)
        return _Plan(AgedOutcome.RELEASED, position.symbol, band=None)
    if row is None:
        row = _detect(session, position, decision, mark, now)
    else:
        _follow(session, position, row, decision, mark, now)
    band = aged.band(subject, now, params, band_horizon(settings))
    symbol = position.symbol
    if not (decision.close_now or resuming):
        return _Plan(AgedOutcome.WAITING, symbol, band)
    if row.last_close_attempt_at is not None:
        retry_at = close_retry_at(row.last_close_attempt_at, row.close_attempts, settings)
        if now < retry_at:  # no price can close before then: an unbounded band until it
            return _Plan(AgedOutcome.BACKING_OFF, symbol, PriceBand.unbounded(retry_at))
    return _Plan(AgedOutcome.CLOSED, symbol, band, close=True, decision=decision)


def _check_fence(session: Session, position_id: int, token: int) -> None:
    """Refuse to write aged state behind a newer lock holder's back (see core/locks.py).

    The position row is locked FOR UPDATE for the transaction, so a newer holder's write
    waits for ours: check and write are one step without touching the position itself.
    """
    fence = session.scalar(
        select(Position.fence).where(Position.id == position_id).with_for_update()
    )
    if fence is None or fence > token:
        raise StaleFence(f"position {position_id}: token {token} is older than the row's")


def _stored(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(STORED_SCALE)


def _detect(
    session: Session,
    position: Position,
    decision: AgedDecision,
    mark: Decimal | None,
    now: datetime,
) -> AgedPosition:
    row = AgedPosition(
        position_id=position.id,
        phase=decision.phase.value,
        target_price=_stored(decision.target_price),
        accepted_loss_percent=_stored(decision.accepted_loss_pct),
        detected_at=now,
        updated_at=now,
        close_attempts=0,
    )
    session.add(row)
    record(
        session,
        EventType.AGED_POSITION_DETECTED,
        ctx=context(position),
        phase=decision.phase,
        aged_since=decision.aged_since,
        hours_aged=decision.hours_aged,
        opened_at=position.opened_at,
        entry_price=position.entry_price,
        target_price=decision.target_price,
        mark_price=mark,
    )
    _store_transition(session, position, decision, mark, now)
    return row


def _follow(
    session: Session,
    position: Position,
    row: AgedPosition,
    decision: AgedDecision,
    mark: Decimal | None,
    now: datetime,
) -> None:
    """Persist a phase change and a moved target, each with its event."""
    target = _stored(decision.target_price)
    if decision.transition is not None:
        _store_transition(session, position, decision, mark, now)
    elif target != row.target_price:
        record(
            session,
            EventType.AGED_TARGET_UPDATED,
            ctx=context(position),
            phase=decision.phase,
            old_target=row.target_price,
            new_target=target,
            accepted_loss_percent=decision.accepted_loss_pct,
            mark_price=mark,
        )
    if decision.transition is not None or target != row.target_price:
        row.phase = decision.phase.value
        row.target_price = target
        row.accepted_loss_percent = _stored(decision.accepted_loss_pct)
        row.updated_at = now


def _store_transition(
    session: Session,
    position: Position,
    decision: AgedDecision,
    mark: Decimal | None,
    now: datetime,
) -> None:
    transition = decision.transition
    assert transition is not None
    session.add(
        AgedPositionTransition(
            position_id=position.id,
            from_phase=transition.from_phase.value,
            to_phase=transition.to_phase.value,
            target_price=_stored(decision.target_price),
            accepted_loss_percent=_stored(decision.accepted_loss_pct),
            mark_price=mark,
            reason=f"{transition.reason}; {decision.reason}",
            created_at=now,
        )
    )
    record(
        session,
        EventType.AGED_PHASE_CHANGED,
        ctx=context(position),
        from_phase=transition.from_phase,
        to_phase=transition.to_phase,
        target_price=decision.target_price,
        accepted_loss_percent=decision.accepted_loss_pct,
        hours_aged=decision.hours_aged,
        mark_price=mark,
        reason=decision.reason,
    )


def _release(
    session: Session,
    position: Position,
    row: AgedPosition,
    decision: AgedDecision,
    mark: Decimal | None,
    now: datetime,
) -> None:
    """Trailing became active: it owns the exit now, the aged state goes (history stays)."""
    _store_transition(session, position, decision, mark, now)
    session.delete(row)
    record(session, EventType.AGED_POSITION_REMOVED, ctx=context(position), reason=decision.reason)


def _close(
    deps: Deps,
    held: HeldLock,
    position_id: int,
    symbol: str,
    decision: AgedDecision,
    mark: Decimal | None,
    now: datetime,
    source: str,
) -> AgedOutcome:
    """Close at market through the single close path; count the attempt, back off on failure."""
    with unit_of_work() as session:
        row = session.get(AgedPosition, position_id)
        position = session.get(Position, position_id)
        assert row is not None and position is not None
        row.close_attempts += 1
        row.last_close_attempt_at = now
        row.updated_at = now
        attempt = row.close_attempts
        record(
            session,
            EventType.AGED_CLOSE_TRIGGERED,
            ctx=context(position),
            close_reason=decision.close_reason or "resume interrupted close",
            phase=decision.phase,
            target_price=decision.target_price,
            mark_price=mark,
            attempt=attempt,
            source=source,
        )
    held.extend()
    try:
        close_locked(deps, held, position_id, reason=CLOSE_REASON)
    except errors.Retryable as exc:
        retry_at = close_retry_at(now, attempt, deps.settings)
        _record_failure(deps, position_id, attempt, str(exc), retry_at)
        bands.publish(
            deps.redis, deps.exchange_name, symbol, COMPONENT, PriceBand.unbounded(retry_at)
        )
        return AgedOutcome.CLOSE_FAILED
    bands.publish(deps.redis, deps.exchange_name, symbol, COMPONENT, None)
    return AgedOutcome.CLOSED


def _record_failure(
    deps: Deps, position_id: int, attempt: int, error: str, retry_at: datetime
) -> None:
    with unit_of_work() as session:
        row = session.get(AgedPosition, position_id)
        position = session.get(Position, position_id)
        assert position is not None
        if row is not None:
            row.last_close_error = error[:1000]
        record(
            session,
            EventType.AGED_CLOSE_FAILED,
            severity=Severity.ERROR,
            ctx=context(position),
            attempt=attempt,
            error=error,
            retry_at=retry_at,
            position_status=position.status,
        )
        if attempt == deps.settings.aged_close_alert_attempts:
            record(
                session,
                EventType.CRITICAL_ERROR,
                severity=Severity.CRITICAL,
                ctx=context(position),
                reason=f"aged close failed {attempt} times; the stop still protects",
                error=error,
            )


# --- bands --------------------------------------------------------------------------------------


def _remove_stale_bands(deps: Deps) -> list[str]:
    """Drop ``"aged"`` components with no aged row behind them (a close elsewhere ended it).

    The close paths' ``finish`` deletes the aged row but does not know about bands; a band left
    behind would make the ingest enqueue useless price tasks for that symbol.
    """
    exchange = deps.exchange_name
    watched = [
        symbol
        for symbol in bands.tracked_symbols(deps.redis, exchange)
        if COMPONENT in bands.components(deps.redis, exchange, symbol)
    ]
    removed: list[str] = []
    for symbol in sorted(set(watched) - _aged_symbols(exchange, watched)):
        try:
            with lock_for(deps, exchange, symbol):  # aged rows are created under this lock
                if _aged_symbols(exchange, [symbol]):
                    continue
                bands.publish(deps.redis, exchange, symbol, COMPONENT, None)
        except LockNotAcquired:
            continue  # busy symbol: the next cycle looks again
        removed.append(symbol)
        with unit_of_work() as session:
            record(
                session,
                EventType.CLEANUP_ACTION,
                exchange=exchange,
                symbol=symbol,
                action="stale aged band removed",
            )
    return removed


def _aged_symbols(exchange: str, symbols: list[str]) -> set[str]:
    if not symbols:
        return set()
    with unit_of_work() as session:
        return set(
            session.scalars(
                select(Position.symbol)
                .join(AgedPosition, AgedPosition.position_id == Position.id)
                .where(Position.exchange == exchange, Position.symbol.in_(symbols))
            )
        )
