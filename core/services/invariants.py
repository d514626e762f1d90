"""The invariant checker: what must be true of the database and the exchange, checked at once.

A library first: ``check_invariants(deps)`` returns a typed ``InvariantReport``; ``vigil
diagnose`` prints it, the health endpoint counts unprotected positions with the same
function, and the chaos suite asserts ``report.clean`` after killing things. Read-only: it
never changes the database or the exchange (``vigil cleanup`` acts on what it finds).

Each check is a pure function of one snapshot (DB rows + one batch read of the exchange:
positions, open orders), so it is tested on plain values and runs in constant exchange calls.

The invariants (a violation kind each):

- ``duplicate_position``: more than one non-terminal position per (exchange, symbol). The
  partial unique index forbids it; the checker verifies the database still does.
- ``unprotected_position``: an ``active`` position whose exchange position has no live
  stop-loss covering its quantity (a ``closePosition`` stop covers any quantity).
- ``stale_opening``: a position left in ``pending_entry`` / ``entry_placed`` /
  ``pending_sl`` (or a rollback's ``closing``) longer than the grace.
- ``orphan_order``: an open order with the engine's client id whose position is terminal or
  unknown; a reduce-only or conditional (stop/TP) order on a symbol with no exchange position.
- ``orphan_trailing`` / ``orphan_aged``: state rows of a terminal position.
- ``missing_transition_event``: a position whose status history is not fully told by its
  ``position_created`` and ``position_status_changed`` events.
- ``position_mismatch``: database and exchange disagree (phantom, missing, quantity, side),
  with the same rules as reconciliation (``core.domain.reconciliation``), so a position in
  flight inside its grace is not a violation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from core.db.models import AgedPosition, Event, Position, TrailingStop
from core.domain.invariants import (
    InvariantReport,
    PositionRow,
    StateRow,
    StatusEvent,
    Violation,
    ViolationKind,
    find_duplicates,
    find_mismatches,
    find_missing_transition_events,
    find_orphan_orders,
    find_orphan_state,
    find_stale_openings,
    find_surplus_stops,
    find_unprotected,
)
from core.domain.orders import ExchangeOrder, ExchangePosition
from core.domain.positions import NON_TERMINAL, TERMINAL, PositionStatus
from core.events import EventType
from core.exchange.client_ids import parse_client_id
from core.exchange.errors import ExchangeFailure
from core.services.deps import Deps, UnitOfWork

__all__ = ["InvariantReport", "Violation", "ViolationKind", "check_invariants", "find_unprotected"]


def _row(p: Any) -> PositionRow:
    """A row of ``select(*_ROW_COLUMNS)``: its columns are the dataclass's fields, in order."""
    return PositionRow(*tuple(p))


#: the columns of ``PositionFacts``, in its order: a view's query starts with these
POSITION_FACT_COLUMNS = (
    Position.id,
    Position.exchange,
    Position.symbol,
    Position.side,
    Position.status,
    Position.quantity,
)
_ROW_COLUMNS = (
    *POSITION_FACT_COLUMNS,
    Position.correlation_id,
    Position.close_reason,
    Position.created_at,
    Position.updated_at,
)


def load_open_rows(session: Session, exchange: str) -> list[PositionRow]:
    """Non-terminal positions of one exchange."""
    return _rows(session, exchange, Position.status.in_([s.value for s in NON_TERMINAL]))


def _recent_rows(session: Session, exchange: str, since: datetime) -> list[PositionRow]:
    """Non-terminal positions, and terminal ones that changed since ``since``."""
    terminal = [s.value for s in TERMINAL]
    changed = or_(Position.status.not_in(terminal), Position.updated_at >= since)
    return _rows(session, exchange, changed)


def _rows(session: Session, exchange: str, which: ColumnElement[bool]) -> list[PositionRow]:
    query = select(*_ROW_COLUMNS).where(Position.exchange == exchange, which)
    return [_row(p) for p in session.execute(query.order_by(Position.id))]


def _rows_by_id(session: Session, ids: Iterable[int]) -> dict[int, PositionRow]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {
        p.id: _row(p) for p in session.execute(select(*_ROW_COLUMNS).where(Position.id.in_(wanted)))
    }


def _status_events(session: Session, ids: Sequence[int]) -> dict[int, list[StatusEvent]]:
    out: dict[int, list[StatusEvent]] = defaultdict(list)
    if not ids:
        return out
    rows = session.execute(
        select(
            Event.position_id,
            Event.type,
            Event.data["from_status"].astext,
            Event.data["to_status"].astext,
            Event.data["status"].astext,
        )
        .where(
            Event.position_id.in_(ids),
            Event.type.in_(
                [EventType.POSITION_CREATED.value, EventType.POSITION_STATUS_CHANGED.value]
            ),
        )
        .order_by(Event.id)
    )
    for position_id, type_, from_status, to_status, created_status in rows:
        if type_ == EventType.POSITION_CREATED:
            out[position_id].append(StatusEvent(position_id, None, created_status))
        else:
            out[position_id].append(StatusEvent(position_id, from_status, to_status))
    return out


def _state_rows(session: Session, model: Any, exchange: str) -> list[StateRow]:
    return [
        StateRow(pid, symbol, status)
        for pid, symbol, status in session.execute(
            select(model.position_id, Position.symbol, Position.status)
            .join(Position, Position.id == model.position_id)
            .where(Position.exchange == exchange)
        )
    ]


def db_duplicates(session: Session, exchange: str | None = None) -> list[Violation]:
    """Duplicates straight from SQL (also used by the duplicate-race reproduction)."""
    stmt = (
        select(Position.exchange, Position.symbol, func.count(Position.id), func.min(Position.id))
        .where(Position.status.in_([s.value for s in NON_TERMINAL]))
        .group_by(Position.exchange, Position.symbol)
        .having(func.count(Position.id) > 1)
    )
    if exchange is not None:
        stmt = stmt.where(Position.exchange == exchange)
    return [
        Violation(
            ViolationKind.DUPLICATE_POSITION,
            f"{count} non-terminal positions",
            exchange=ex,
            symbol=symbol,
            position_id=first,
        )
        for ex, symbol, count, first in session.execute(stmt)
    ]


@dataclass
class _Exchange:
    positions: list[ExchangePosition] = field(default_factory=list)
    orders: list[ExchangeOrder] = field(default_factory=list)
    step_sizes: dict[str, Decimal] = field(default_factory=dict)
    error: str | None = None


def _read_exchange(deps: Deps) -> _Exchange:
    """One batch read: all positions (1 call), all open orders (2 calls)."""
    try:
        positions = [p.to_domain() for p in deps.exchange.positions()]
        orders = [o.to_domain() for o in deps.exchange.open_orders()]
    except ExchangeFailure as exc:
        return _Exchange(error=f"exchange unreachable: {type(exc).__name__}: {exc}")
    steps = {}
    for symbol in {p.symbol for p in positions}:
        try:
            steps[symbol] = deps.exchange.rules(symbol).step_size  # cached markets: no call
        except ExchangeFailure:
            continue  # no tolerance known: quantities must match exactly
    return _Exchange(positions, orders, steps)


def check_invariants(
    deps: Deps, *, now: datetime | None = None, session: Session | None = None
) -> InvariantReport:
    """Check every invariant for ``deps``' exchange; read-only.

    ``session``: read through the caller's session (a test can check a state it has not
    committed); by default the Deps' transactions. The exchange is read once, after the
    database and with no transaction open, so an order placed in between is newer than the
    rows it would be judged against, never older; the owners of the orders it shows are
    read after it.
    """
    now = now or deps.clock.now()
    reads: UnitOfWork = deps.unit_of_work if session is None else (lambda: nullcontext(session))
    return _check(deps, reads, now)


def _check(deps: Deps, reads: UnitOfWork, now: datetime) -> InvariantReport:
    exchange = deps.exchange_name
    settings = deps.settings
    grace = timedelta(seconds=settings.intermediate_state_grace_seconds)
    history_since = now - timedelta(days=settings.event_retention_days)
    with reads() as session:
        rows = _recent_rows(session, exchange, now - grace)
        orphan_state = find_orphan_state(
            _state_rows(session, TrailingStop, exchange),
            _state_rows(session, AgedPosition, exchange),
        )
        told = [
            r
            for r in _recent_rows(session, exchange, history_since)
            if r.created_at >= history_since
        ]
        status_events = _status_events(session, [r.id for r in told])
    open_rows = [r for r in rows if PositionStatus(r.status) in NON_TERMINAL]
    violations: list[Violation] = find_duplicates(open_rows)
    violations += find_stale_openings(open_rows, now, grace)
    violations += orphan_state
    violations += find_missing_transition_events(told, status_events)
    ex = _read_exchange(deps)
    errors = (ex.error,) if ex.error else ()
    if ex.error is None:
        violations += find_unprotected(open_rows, ex.orders, ex.positions)
        violations += find_surplus_stops(open_rows, ex.orders, ex.positions)
        owner_ids = [p.position_id for o in ex.orders if (p := parse_client_id(o.client_id))]
        with reads() as session:
            owners = _rows_by_id(session, owner_ids)
        busy = frozenset(r.symbol for r in open_rows if r.in_flight and now - r.updated_at <= grace)
        violations += find_orphan_orders(exchange, ex.orders, owners, ex.positions, busy)
        violations += find_mismatches(exchange, rows, ex.positions, now, grace, ex.step_sizes)
    return InvariantReport(
        exchange=exchange,
        checked_at=now,
        violations=tuple(violations),
        errors=errors,
        positions_checked=len(open_rows),
        orders_checked=len(ex.orders),
    )
