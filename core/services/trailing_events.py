"""The events a trailing decision writes, each in the transaction of the change it reports.

Apart from ``core/services/trailing.py`` (the move itself) so that the move reads as its
steps: what each step records is here, one function per outcome.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from core.db.models import Position
from core.domain.trailing import PriceWindow, TrailingAction, TrailingDecision
from core.events import EventType, NewEvent, Severity, new_event, record, record_now
from core.exchange import errors
from core.services.executor import Replacement
from core.services.positions import context


def record_decision(
    session: Session,
    position: Position,
    decision: TrailingDecision,
    window: PriceWindow,
) -> None:
    """The decision's own events (activated, breakeven, deferred); a move's is ``moved``."""
    record_now(session, *decision_events(position, decision, window))


def decision_events(
    position: Position, decision: TrailingDecision, window: PriceWindow
) -> list[NewEvent]:
    """``record_decision``'s events, to send with others in one statement (``record_now``)."""
    state = decision.state
    ctx = context(position)
    found: list[NewEvent] = []
    for action in decision.events:
        if action is TrailingAction.ACTIVATE:
            found.append(
                new_event(
                    EventType.TRAILING_STOP_ACTIVATED,
                    ctx=ctx,
                    activation_price=state.activation_price,
                    highest_price=state.highest_price,
                    lowest_price=state.lowest_price,
                    last_price=window.last,
                    reason=decision.reason,
                )
            )
        elif action is TrailingAction.BREAKEVEN:
            found.append(
                new_event(EventType.TRAILING_STOP_BREAKEVEN, ctx=ctx, reason=decision.reason)
            )
        elif action is TrailingAction.DEFERRED:
            found.append(
                new_event(
                    EventType.TRAILING_STOP_RATE_LIMITED,
                    ctx=ctx,
                    stop_price=decision.old_stop,
                    wanted_stop=state.pending_stop,
                    retry_at=decision.retry_at,
                )
            )
    return found


def moved_events(
    position: Position,
    decision: TrailingDecision,
    replaced: Replacement,
    window: PriceWindow,
    live_price: Decimal | None,
) -> list[NewEvent]:
    """The stop moved (``trailing_stop_updated``), and each old stop that stayed; written by
    the caller with the decision's (``record_now``: one statement for a move's events)."""
    state, client_id = decision.state, replaced.new.intent.client_id
    found = [
        new_event(
            EventType.TRAILING_STOP_UPDATED,
            ctx=context(position),
            order_id=client_id,
            exchange_order_id=replaced.new.order.id,
            old_stop=decision.old_stop,
            new_stop=live_price,
            update_count=state.update_count,
            highest_price=state.highest_price,
            lowest_price=state.lowest_price,
            last_price=window.last,
            tick_at=getattr(window, "first_tick_at", None),
        )
    ]
    for c in replaced.cancels:
        if c.failure is not None:
            found.append(
                new_event(
                    EventType.TRAILING_OLD_STOP_CANCEL_FAILED,
                    ctx=context(position),
                    order_id=c.order.client_id,
                    exchange_order_id=c.exchange_id,
                    kept_stop=client_id,
                    error=str(c.failure),
                    code=c.failure.code,
                )
            )
    return found


def failed(
    session: Session,
    position: Position,
    decision: TrailingDecision,
    failure: errors.ExchangeFailure | None,
    *,
    stage: str,
    reason: str | None,
    owner: str,
) -> None:
    """A move that did not happen (the old stop stays), and a rate limit if that was why."""
    if isinstance(failure, errors.RateLimited):
        record(
            session,
            EventType.API_RATE_LIMIT_HIT,
            ctx=context(position),
            error=str(failure),
        )
    record(
        session,
        EventType.TRAILING_STOP_UPDATE_FAILED,
        severity=Severity.WARNING if failure is None else Severity.ERROR,
        ctx=context(position),
        stage=stage,
        stop_price=decision.old_stop,
        wanted_stop=decision.new_stop,
        reason=reason or type(failure).__name__,
        error=str(failure) if failure is not None else None,
        code=failure.code if failure is not None else None,
        owner=owner,
    )
