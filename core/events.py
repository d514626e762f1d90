"""The event log: every decision and state change leaves a row, in the same transaction.

Why in the caller's transaction: the old bot wrote events on a side channel after the fact,
so a crash between the change and the log lost 3 of 4 critical events. Here ``record`` only
adds a row to the session the change is made in; the row exists if and only if the change
committed. Nothing here commits.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from core.db.models import Alert, Event
from core.domain.severity import Severity


class EventType(StrEnum):
    """Every event the engine writes. Grouped as the paths that write them."""

    # signals and waves
    SIGNAL_RECEIVED = "signal_received"
    SIGNAL_REJECTED = "signal_rejected"
    SIGNAL_DUPLICATE = "signal_duplicate"
    SIGNAL_FILTERED = "signal_filtered"
    SIGNAL_EXECUTED = "signal_executed"
    SIGNAL_FAILED = "signal_execution_failed"
    WAVE_MONITORING_STARTED = "wave_monitoring_started"
    WAVE_DETECTED = "wave_detected"
    WAVE_STARTED = "wave_started"
    WAVE_COMPLETED = "wave_completed"
    WAVE_NOT_FOUND = "wave_not_found"
    WAVE_DUPLICATE_DETECTED = "wave_duplicate_detected"
    SIGNAL_SELECTED = "signal_selected"
    SIGNAL_EXPIRED = "signal_expired"
    WAVE_RESUMED = "wave_resumed"
    WAVE_EXPIRED = "wave_expired"

    # the position state machine and the atomic open
    POSITION_CREATED = "position_created"
    POSITION_STATUS_CHANGED = "position_status_changed"
    POSITION_DUPLICATE_PREVENTED = "position_duplicate_prevented"
    ENTRY_ORDER_PLACED = "entry_order_placed"
    ENTRY_ORDER_FILLED = "entry_order_filled"
    ENTRY_ORDER_PARTIALLY_FILLED = "entry_order_partially_filled"
    ENTRY_ORDER_FAILED = "entry_order_failed"
    STOP_LOSS_PLACEMENT_STARTED = "stop_loss_placement_started"
    STOP_LOSS_PLACED = "stop_loss_placed"
    STOP_LOSS_FAILED = "stop_loss_failed"
    POSITION_ROLLBACK_STARTED = "position_rollback_started"
    POSITION_ROLLED_BACK = "position_rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    EMERGENCY_STOP_PLACED = "emergency_stop_placed"
    RISK_LIMITS_EXCEEDED = "risk_limits_exceeded"
    SYMBOL_UNAVAILABLE = "symbol_unavailable"
    ORDER_BELOW_MINIMUM = "order_below_minimum"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    OPENINGS_PAUSED = "openings_paused"
    ORDER_LOOKUP_BEFORE_RETRY = "order_lookup_before_retry"
    # the order ledger refused to move an order's status backwards (core/domain/orders.py)
    ORDER_STATUS_MOVE_REFUSED = "order_status_move_refused"
    EXCHANGE_ERROR = "exchange_error"

    # closing
    POSITION_CLOSE_REQUESTED = "position_close_requested"
    CLOSE_ORDER_PLACED = "close_order_placed"
    CLOSE_ORDER_FILLED = "close_order_filled"
    CLOSE_FAILED = "close_failed"
    POSITION_CLOSED = "position_closed"
    STOP_TRIGGERED = "stop_triggered"

    # trailing stop
    TRAILING_STOP_CREATED = "trailing_stop_created"
    TRAILING_STOP_ACTIVATED = "trailing_stop_activated"
    TRAILING_STOP_UPDATED = "trailing_stop_updated"
    TRAILING_STOP_BREAKEVEN = "trailing_stop_breakeven"
    TRAILING_STOP_UPDATE_FAILED = "trailing_stop_update_failed"
    TRAILING_STOP_RATE_LIMITED = "trailing_stop_rate_limited"
    TRAILING_STOP_REMOVED = "trailing_stop_removed"
    TRAILING_STOP_TAKEN_OVER = "trailing_stop_taken_over"
    # trailing takes its stop back from protection to make a move (core/services/trailing.py)
    TRAILING_STOP_RECLAIMED = "trailing_stop_reclaimed"
    # a move's new stop is live but the old one could not be cancelled: left to the zombie
    # cleaner (surplus stop), the position has two stops meanwhile, never none
    TRAILING_OLD_STOP_CANCEL_FAILED = "trailing_old_stop_cancel_failed"

    # protection
    PROTECTION_CHECK_STARTED = "protection_check_started"
    PROTECTION_CHECK_COMPLETED = "protection_check_completed"
    MISSING_STOP_DETECTED = "missing_stop_detected"
    STOP_SET_BY_PROTECTION = "stop_set_by_protection"
    PROTECTION_STOP_FAILED = "protection_stop_failed"
    POSITION_UNPROTECTED_ALERT = "position_unprotected_alert"
    SURPLUS_STOP_CANCELLED = "surplus_stop_cancelled"

    # reconciliation
    SYNCHRONIZATION_STARTED = "synchronization_started"
    SYNCHRONIZATION_COMPLETED = "synchronization_completed"
    PHANTOM_POSITION_DETECTED = "phantom_position_detected"
    PHANTOM_POSITION_CLOSED = "phantom_position_closed"
    MISSING_POSITION_ADDED = "missing_position_added"
    QUANTITY_MISMATCH = "quantity_mismatch_detected"
    SIDE_MISMATCH = "side_mismatch_detected"
    DUPLICATE_POSITION_DETECTED = "duplicate_position_detected"

    # zombie orders
    ZOMBIE_ORDERS_DETECTED = "zombie_orders_detected"
    ZOMBIE_ORDER_CANCELLED = "zombie_order_cancelled"
    ZOMBIE_ORDER_CANCEL_FAILED = "zombie_order_cancel_failed"
    ZOMBIE_CLEANUP_COMPLETED = "zombie_cleanup_completed"
    ZOMBIE_ALERT = "zombie_alert_triggered"
    ORPHANED_SL_CLEANED = "orphaned_sl_cleaned"

    # aged positions
    AGED_POSITION_DETECTED = "aged_position_detected"
    AGED_PHASE_CHANGED = "aged_phase_changed"
    AGED_TARGET_UPDATED = "aged_target_updated"
    AGED_CLOSE_TRIGGERED = "aged_close_triggered"
    AGED_CLOSE_FAILED = "aged_close_failed"
    AGED_POSITION_REMOVED = "aged_position_removed"

    # cleanup and recovery
    ORPHAN_STATE_CLEANED = "orphan_state_cleaned"
    POSITION_RECOVERY_STARTED = "position_recovery_started"
    POSITION_RECOVERED = "position_recovered"
    POSITION_RECOVERY_COMPLETED = "position_recovery_completed"
    TASK_GAVE_UP = "task_gave_up"

    # system
    SYSTEM_STARTED = "system_started"
    SYSTEM_STOPPED = "system_stopped"
    WEBSOCKET_RECONNECTED = "websocket_reconnected"
    WEBSOCKET_DISCONNECTED = "websocket_disconnected"
    WEBSOCKET_AUTH_REFUSED = "websocket_auth_refused"
    DATABASE_CONNECTION_LOST = "database_connection_lost"
    API_RATE_LIMIT_HIT = "api_rate_limit_hit"
    HEALTH_CHECK_FAILED = "health_check_failed"
    CRITICAL_ERROR = "critical_error"
    LOCK_STALE_WRITE_REJECTED = "lock_stale_write_rejected"
    CLEANUP_ACTION = "cleanup_action"
    # supervision: a process of `vigil up` or a loop inside one died and was started again
    PROCESS_RESTARTED = "process_restarted"
    PROCESS_CRASH_LOOP = "process_crash_loop"
    LOOP_RESTARTED = "loop_restarted"

    # operator control (core/services/halts.py): a halt stops new openings, nothing else
    HALTED = "halted"
    RESUMED = "resumed"
    # a venue in maintenance (or answering 503 for too long) paused openings; it answers again
    OPENINGS_RESUMED = "openings_resumed"
    # an operator changed a per-symbol setting (core/services/symbol_settings.py): old and new
    SYMBOL_SETTINGS_CHANGED = "symbol_settings_changed"

    # paging when the engine goes blind (core/services/paging.py): a health component down
    # for longer than the confirmation time (critical), its recovery, and the guardians'
    # exchange reads failing cycle after cycle (critical)
    COMPONENT_DOWN = "component_down"
    COMPONENT_RECOVERED = "component_recovered"
    EXCHANGE_READS_FAILING = "exchange_reads_failing"
    EXCHANGE_READS_RECOVERED = "exchange_reads_recovered"

    # alert delivery (core/services/alerts.py); never critical, or a failing channel would
    # page about itself forever
    ALERT_SENT = "alert_sent"
    ALERT_DELIVERY_FAILED = "alert_delivery_failed"
    ALERT_GAVE_UP = "alert_gave_up"


# Events that page someone: the alerting path turns these into alert rows.
ALERTING: frozenset[EventType] = frozenset(
    {
        EventType.EMERGENCY_STOP_PLACED,
        EventType.ROLLBACK_FAILED,
        EventType.POSITION_UNPROTECTED_ALERT,
        EventType.ZOMBIE_ALERT,
        EventType.SIDE_MISMATCH,
        EventType.DUPLICATE_POSITION_DETECTED,
        EventType.INSUFFICIENT_FUNDS,
        EventType.CRITICAL_ERROR,
        EventType.PROCESS_CRASH_LOOP,
        EventType.HALTED,
        EventType.RESUMED,
    }
)


# An event type's usual severity, in one place: a call site names a severity only where its
# case differs (an expected outcome recorded at info, a worse one escalated). Types not
# listed are info.
USUAL_SEVERITY: dict[EventType, Severity] = {
    EventType.AGED_CLOSE_FAILED: Severity.ERROR,
    EventType.ALERT_DELIVERY_FAILED: Severity.WARNING,
    EventType.ALERT_GAVE_UP: Severity.ERROR,
    EventType.API_RATE_LIMIT_HIT: Severity.WARNING,
    EventType.CLEANUP_ACTION: Severity.WARNING,
    EventType.CLOSE_FAILED: Severity.ERROR,
    EventType.COMPONENT_DOWN: Severity.CRITICAL,
    EventType.COMPONENT_RECOVERED: Severity.WARNING,
    EventType.CRITICAL_ERROR: Severity.CRITICAL,
    EventType.DUPLICATE_POSITION_DETECTED: Severity.CRITICAL,
    EventType.EMERGENCY_STOP_PLACED: Severity.CRITICAL,
    EventType.ENTRY_ORDER_FAILED: Severity.WARNING,
    EventType.EXCHANGE_ERROR: Severity.WARNING,
    EventType.EXCHANGE_READS_FAILING: Severity.CRITICAL,
    EventType.EXCHANGE_READS_RECOVERED: Severity.WARNING,
    EventType.HEALTH_CHECK_FAILED: Severity.ERROR,
    EventType.INSUFFICIENT_FUNDS: Severity.CRITICAL,
    EventType.LOOP_RESTARTED: Severity.ERROR,
    EventType.MISSING_POSITION_ADDED: Severity.WARNING,
    EventType.MISSING_STOP_DETECTED: Severity.WARNING,
    EventType.OPENINGS_PAUSED: Severity.WARNING,
    EventType.ORDER_LOOKUP_BEFORE_RETRY: Severity.WARNING,
    EventType.ORDER_STATUS_MOVE_REFUSED: Severity.WARNING,
    EventType.PHANTOM_POSITION_DETECTED: Severity.WARNING,
    EventType.POSITION_DUPLICATE_PREVENTED: Severity.WARNING,
    EventType.POSITION_ROLLBACK_STARTED: Severity.WARNING,
    EventType.POSITION_UNPROTECTED_ALERT: Severity.CRITICAL,
    EventType.PROTECTION_STOP_FAILED: Severity.ERROR,
    EventType.QUANTITY_MISMATCH: Severity.WARNING,
    EventType.RISK_LIMITS_EXCEEDED: Severity.WARNING,
    EventType.ROLLBACK_FAILED: Severity.CRITICAL,
    EventType.SIDE_MISMATCH: Severity.CRITICAL,
    EventType.SIGNAL_EXPIRED: Severity.WARNING,
    EventType.SIGNAL_FAILED: Severity.WARNING,
    EventType.SIGNAL_REJECTED: Severity.WARNING,
    EventType.TASK_GAVE_UP: Severity.ERROR,
    EventType.TRAILING_OLD_STOP_CANCEL_FAILED: Severity.WARNING,
    EventType.TRAILING_STOP_TAKEN_OVER: Severity.WARNING,
    EventType.WAVE_COMPLETED: Severity.WARNING,
    EventType.WAVE_EXPIRED: Severity.WARNING,
    EventType.WAVE_NOT_FOUND: Severity.WARNING,
    EventType.WAVE_RESUMED: Severity.WARNING,
    EventType.WEBSOCKET_RECONNECTED: Severity.WARNING,
    EventType.ZOMBIE_ALERT: Severity.CRITICAL,
    EventType.ZOMBIE_ORDERS_DETECTED: Severity.WARNING,
    EventType.ZOMBIE_ORDER_CANCEL_FAILED: Severity.ERROR,
}


@dataclass(frozen=True, slots=True)
class EventContext:
    """Who an event is about; carried through a use case so each event names it."""

    exchange: str | None = None
    symbol: str | None = None
    position_id: int | None = None
    correlation_id: str | None = None


def _text(value: str) -> str:
    """PostgreSQL's text and jsonb cannot hold NUL; a hostile frame must still be recorded."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON, as events store it: Decimal as text (exact), times in ISO
    8601, enums as their values."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def jsonable_fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as plain JSON (``jsonable``): what a report or a view shows."""
    return {name: jsonable(value) for name, value in asdict(obj).items()}


def _optional_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def record(
    session: Session,
    event_type: EventType,
    *,
    severity: Severity | None = None,
    ctx: EventContext | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
    position_id: int | None = None,
    order_id: str | None = None,
    correlation_id: str | None = None,
    **data: Any,
) -> Event:
    """Add an event row to ``session``; it commits or rolls back with the caller's change.

    ``severity`` defaults to the type's usual one (``USUAL_SEVERITY``). Explicit keyword
    arguments override the context's fields. Decimal, datetime and enum
    values in ``data`` are stored as strings so the JSON keeps full precision.
    """
    ctx = ctx or EventContext()
    if severity is None:
        severity = USUAL_SEVERITY.get(event_type, Severity.INFO)
    event = Event(
        **_row(
            event_type, severity, ctx, exchange, symbol, position_id, order_id, correlation_id, data
        )
    )
    session.add(event)
    if severity == Severity.CRITICAL or event_type in ALERTING:
        session.add(alert_for(event))
    return event


def _row(
    event_type: EventType,
    severity: Severity,
    ctx: EventContext,
    exchange: str | None,
    symbol: str | None,
    position_id: int | None,
    order_id: str | None,
    correlation_id: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """An event row's columns (``record``'s rules: explicit arguments over the context)."""
    return {
        "type": event_type.value,
        "severity": severity.value,
        "exchange": exchange if exchange is not None else ctx.exchange,
        "symbol": _optional_text(symbol if symbol is not None else ctx.symbol),
        "position_id": position_id if position_id is not None else ctx.position_id,
        "order_id": _optional_text(order_id),
        "correlation_id": _optional_text(
            correlation_id if correlation_id is not None else ctx.correlation_id
        ),
        "data": json.loads(json.dumps(jsonable(data))),
    }


@dataclass(frozen=True)
class NewEvent:
    """An event to write with ``record_now``: what ``record`` takes, as a value."""

    type: EventType
    ctx: EventContext | None = None
    order_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def new_event(
    event_type: EventType,
    *,
    ctx: EventContext | None = None,
    order_id: str | None = None,
    **data: Any,
) -> NewEvent:
    return NewEvent(event_type, ctx, order_id, data)


def record_now(session: Session, *events: NewEvent) -> None:
    """``record`` for each event, as one INSERT sent at once, for a hot path: no ORM object,
    so the commit has nothing to flush (the unit of work's flush of a move's event cost more
    CPU than the statement). Same rows, same transaction as the caller's change, in the
    order given. An alerting type goes through ``record`` (its alert row is written with
    it); events the session still holds unflushed are flushed first, so events keep the
    order they were recorded in."""
    rows: list[dict[str, Any]] = []
    for event in events:
        severity = USUAL_SEVERITY.get(event.type, Severity.INFO)
        if severity == Severity.CRITICAL or event.type in ALERTING:
            _insert_now(session, rows)
            rows = []
            record(session, event.type, ctx=event.ctx, order_id=event.order_id, **event.data)
            continue
        ctx = event.ctx or EventContext()
        rows.append(
            _row(event.type, severity, ctx, None, None, None, event.order_id, None, event.data)
        )
    _insert_now(session, rows)


def _insert_now(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if session.new:  # an event added through ``record`` and not yet sent goes first
        session.flush()
    session.execute(_insert_statement(), rows if len(rows) > 1 else rows[0])


@functools.cache
def _insert_statement() -> Any:
    """The events INSERT, built once (values bound at execution; ``created_at`` is the
    server's clock, as for an ORM insert)."""
    table: Table = Event.__table__  # type: ignore[assignment]
    return insert(table)


def alert_for(event: Event) -> Alert:
    """The outbox row of an alerting event, added with it (transactional outbox).

    Why here and not a later scan of the events table: ids are drawn before their
    transactions commit, so a scan that remembers "the last id processed" skips an event
    whose transaction commits after a later one. Written with the event, the alert exists
    exactly when the event does. Delivery, dedup and retries: core/services/alerts.py.
    """
    where = f"{event.exchange or '-'}:{event.symbol or '-'}"
    subject = f" position {event.position_id}" if event.position_id is not None else ""
    # alerts about one part of the system (component_down) dedup per part, not per venue
    component = (event.data or {}).get("component")
    part = f":{component}" if isinstance(component, str) and component else ""
    if part:
        subject = f"{subject} ({component})"
    return Alert(
        event=event,
        severity=event.severity,
        kind=event.type,
        message=f"{event.type} on {where}{subject}",
        dedup_key=f"{event.type}:{where}{part}"[:200],
        status="pending",
        delivered=[],
        suppressed_count=0,
        attempts=0,
    )


def record_alone(event_type: EventType, **kwargs: Any) -> None:
    """One event in a transaction of its own: for a decision or failure that changes
    nothing else (a failed exchange call, a cycle's start and end), so no caller writes
    the same three lines of session handling around one ``record``."""
    from core.db.session import unit_of_work  # the engine, built lazily: never at import

    with unit_of_work() as session:
        record(session, event_type, **kwargs)
