"""One aged position under its symbol lock: evaluate, record the phase, close when due.

The beat pass and the price reaction (``core/services/aged.py``) both end here, so the
decision (``core.domain.aged``), its durable row and the close (through the one close
path, ``core.services.closing.close_locked``) happen the same way whoever asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import AgedPosition, AgedPositionTransition, Position, TrailingStop
from core.domain import aged
from core.domain.aged import AgedDecision, AgedParams, AgedPhase
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.domain.sides import Side
from core.domain.timeutil import doubling_delay
from core.events import EventType, record
from core.exchange import errors
from core.locks import HeldLock, StaleFence
from core.services import bands
from core.services.closing import close_locked
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
    delay = doubling_delay(
        settings.aged_close_retry_seconds, attempts - 1, settings.aged_close_retry_max_seconds
    )
    return last_attempt_at + timedelta(seconds=delay)


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
    with deps.unit_of_work() as session:
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
    row = AgedPosition(position_id=position.id, detected_at=now, close_attempts=0)
    _store_terms(row, decision, now)
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
        _store_terms(row, decision, now)


def _store_terms(row: AgedPosition, decision: AgedDecision, now: datetime) -> None:
    """The decision's phase, target and accepted loss on the aged row, at stored precision."""
    row.phase = decision.phase.value
    row.target_price = _stored(decision.target_price)
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
    with deps.unit_of_work() as session:
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
    with deps.unit_of_work() as session:
        row = session.get(AgedPosition, position_id)
        position = session.get(Position, position_id)
        assert position is not None
        if row is not None:
            row.last_close_error = error[:1000]
        record(
            session,
            EventType.AGED_CLOSE_FAILED,
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
                ctx=context(position),
                reason=f"aged close failed {attempt} times; the stop still protects",
                error=error,
            )
