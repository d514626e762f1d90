"""A stored signal's outcome: its status and reason on the row, and the event saying so.

Why one home: a signal is selected, filtered, expired, failed or opened by the store, the
waves, the opening and the rollback; each wrote the row and its event by hand, so the pair
could drift apart (a status without its event, an event naming another status). Here the
status names its event, and both are written together in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.db.models import Signal
from core.events import EventContext, EventType, record

# Each status a signal moves to after ``received``, and the event that records the move.
OUTCOME_EVENTS: dict[str, EventType] = {
    "selected": EventType.SIGNAL_SELECTED,
    "filtered": EventType.SIGNAL_FILTERED,
    "expired": EventType.SIGNAL_EXPIRED,
    "failed": EventType.SIGNAL_FAILED,
    "opened": EventType.SIGNAL_EXECUTED,
}


def signal_context(row: Signal) -> EventContext:
    return EventContext(exchange=row.exchange, symbol=row.symbol, correlation_id=row.correlation_id)


def set_outcome(
    session: Session,
    row: Signal,
    status: str,
    why: str | None,
    /,
    *,
    ctx: EventContext | None = None,
    **details: Any,
) -> None:
    """Move ``row`` to ``status`` for ``why`` (its stored outcome reason) and record the
    status's event, naming the signal, about ``ctx`` (the signal's own context by default),
    with ``details`` as the event's data."""
    row.status, row.outcome_reason = status, why
    record(
        session,
        OUTCOME_EVENTS[status],
        ctx=ctx or signal_context(row),
        signal_id=row.signal_id,
        **details,
    )


def filter_signal(
    session: Session, row: Signal, reason: str, detail: str, *, ctx: EventContext | None = None
) -> None:
    """``filtered`` for ``reason`` (a filter's name, or ``halted``), ``detail`` saying why."""
    why = f"{reason}: {detail}"
    set_outcome(
        session, row, "filtered", why, ctx=ctx, wave_id=row.wave_id, reason=reason, detail=detail
    )
