"""Writing positions: creation, transitions and the order ledger.

Every status change goes through ``transition``, which checks the state machine, writes with
the lock's fencing token, and adds the event in the same transaction, so no path can change a
status without its event or behind a newer lock holder's back.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, String, Table, any_, bindparam, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import BindParameter

from core.db.constants_sql import in_constants
from core.db.models import Order, Position, Signal
from core.domain.orders import OrderStatus, next_order_status, order_move_allowed
from core.domain.positions import (
    INITIAL,
    NON_TERMINAL,
    PositionStatus,
    PositionTrigger,
    next_status,
)
from core.events import EventContext, EventType, Severity, record
from core.locks import fenced_update
from core.services.signal_outcomes import set_outcome


@dataclass(frozen=True)
class NewPosition:
    exchange: str
    symbol: str
    side: str
    status: PositionStatus = PositionStatus.PENDING_ENTRY
    quantity: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    leverage: int | None = None
    signal_id: int | None = None
    correlation_id: str | None = None


def context(position: Position) -> EventContext:
    return EventContext(
        exchange=position.exchange,
        symbol=position.symbol,
        position_id=position.id,
        correlation_id=position.correlation_id,
    )


def open_position_criteria(
    exchange: str | BindParameter[str], symbol: str | BindParameter[str]
) -> tuple[Any, ...]:
    """The WHERE of the one non-terminal position for (exchange, symbol) (values, or
    parameters bound at execution for a statement built once)."""
    return (
        Position.exchange == exchange,
        Position.symbol == symbol,
        in_constants(Position.status, (s.value for s in NON_TERMINAL)),
    )


def open_position_for(session: Session, exchange: str, symbol: str) -> Position | None:
    """The one non-terminal position for (exchange, symbol), if any."""
    return session.scalars(
        select(Position).where(*open_position_criteria(exchange, symbol))
    ).one_or_none()


def create_position(session: Session, new: NewPosition, **event_data: Any) -> Position | None:
    """Insert a position; None if (exchange, symbol) already has a non-terminal one.

    The partial unique index decides, not a prior SELECT (which would race). The refusal is
    recorded as an event in the caller's transaction; the failed insert is undone through a
    savepoint so the caller's other work stands.
    """
    if new.status not in INITIAL:
        raise ValueError(f"a position cannot start as {new.status}")
    correlation_id = new.correlation_id or uuid.uuid4().hex
    position = Position(
        exchange=new.exchange,
        symbol=new.symbol,
        side=new.side,
        status=new.status.value,
        quantity=new.quantity,
        entry_price=new.entry_price,
        leverage=new.leverage,
        signal_id=new.signal_id,
        correlation_id=correlation_id,
    )
    try:
        with session.begin_nested():
            session.add(position)
            session.flush()
    except IntegrityError:
        existing = open_position_for(session, new.exchange, new.symbol)
        record(
            session,
            EventType.POSITION_DUPLICATE_PREVENTED,
            exchange=new.exchange,
            symbol=new.symbol,
            correlation_id=correlation_id,
            existing_position_id=existing.id if existing else None,
            existing_status=existing.status if existing else None,
            **event_data,
        )
        return None
    record(
        session,
        EventType.POSITION_CREATED,
        ctx=context(position),
        side=new.side,
        status=new.status,
        **event_data,
    )
    return position


def transition(
    session: Session,
    position: Position,
    trigger: PositionTrigger,
    token: int,
    *,
    reason: str | None = None,
    severity: Severity = Severity.INFO,
    **values: Any,
) -> PositionStatus:
    """Apply ``trigger``: check the table, write under the fence, record the event."""
    old = PositionStatus(position.status)
    new = next_status(old, trigger)
    fenced_update(session, position.id, token, status=new.value, **values)
    _written(position, token, status=new.value, **values)
    record(
        session,
        EventType.POSITION_STATUS_CHANGED,
        severity=severity,
        ctx=context(position),
        from_status=old,
        to_status=new,
        trigger=trigger,
        reason=reason,
        **{k: v for k, v in values.items() if k != "fence"},
    )
    return new


def update(session: Session, position: Position, token: int, **values: Any) -> None:
    """Change fields other than status, under the fence."""
    fenced_update(session, position.id, token, **values)
    _written(position, token, **values)


def _written(position: Position, token: int, **values: Any) -> None:
    """The loaded object shows what the fenced UPDATE wrote, as stored values: the ORM does
    not flush them again (a second UPDATE of the same columns, without the fence)."""
    for key, value in {**values, "fence": token}.items():
        set_committed_value(position, key, value)


def record_order(
    session: Session,
    position: Position | int | None,
    *,
    exchange: str,
    symbol: str,
    client_order_id: str,
    purpose: str,
    side: str,
    order_type: str,
    quantity: Decimal,
    status: str,
    exchange_order_id: str | None = None,
    trigger_price: Decimal | None = None,
    reduce_only: bool = False,
    filled_quantity: Decimal | None = None,
    average_price: Decimal | None = None,
) -> OrderStatus:
    """Upsert the ledger row of one order intent, keyed by its client id (idempotent).

    The status moves through the order state machine (``core.domain.orders``): a move the
    table does not allow (backwards: ``open`` after ``filled``) keeps the stored status and
    fill, records ``order_status_move_refused``, and returns the status kept.
    """
    position_id = position.id if isinstance(position, Position) else position
    row = {
        "position_id": position_id,
        "exchange": exchange,
        "symbol": symbol,
        "client_order_id": client_order_id,
        "purpose": purpose,
        "side": side,
        "order_type": order_type,
        "quantity": quantity,
        "status": OrderStatus(status).value,
        "exchange_order_id": exchange_order_id,
        "trigger_price": trigger_price,
        "reduce_only": reduce_only,
        "filled_quantity": filled_quantity or Decimal(0),
        "average_price": average_price,
    }
    if _written_in_one_statement(session, row):
        return OrderStatus(status)
    stored = session.execute(
        select(Order.status, Order.filled_quantity)
        .where(Order.client_order_id == client_order_id)
        .with_for_update()
    ).one_or_none()
    kept = next_order_status(stored.status if stored is not None else None, status)
    if stored is not None and kept != status:  # backwards: keep what is stored, say so
        row["filled_quantity"] = stored.filled_quantity
        where = {"exchange": exchange, "symbol": symbol, "position_id": position_id}
        _refused(session, client_order_id, stored.status, status, where)
    _upsert_order(session, {**row, "status": kept.value})
    return kept


def _written_in_one_statement(session: Session, row: dict[str, Any]) -> bool:
    """The usual cases of ``record_order`` in one statement: a new intent is inserted (an
    intent's client id is fresh), a known row moved where the state machine allows (the
    UPDATE's WHERE admits only those statuses). False: neither applied (a row that is missing
    for an update, or present for an insert, or a refused move): the caller decides on the
    locked row, as for any other case."""
    new = OrderStatus(row["status"])
    if new is OrderStatus.INTENT:
        inserted = session.execute(_insert_new_statement(), row)
        return bool(inserted.rowcount)  # type: ignore[attr-defined]
    columns = (*_REPLACED_ON_CONFLICT, *_KEPT_UNLESS_KNOWN)
    moved = session.execute(
        _order_move_statement(),
        {
            "moved_cid": row["client_order_id"],
            "moved_from": _moves_to(new),
            **{f"moved_{k}": row[k] for k in columns},
        },
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


@functools.cache
def _insert_new_statement() -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` of a ledger row, built once."""
    table: Table = Order.__table__  # type: ignore[assignment]
    return insert(table).on_conflict_do_nothing(index_elements=["client_order_id"])


_REPLACED_ON_CONFLICT = ("status", "filled_quantity")
"""What a later write of a ledger row replaces."""
_KEPT_UNLESS_KNOWN = ("exchange_order_id", "average_price", "trigger_price")
"""What a later write replaces only with a known value (None never erases a fact)."""


@functools.cache
def _order_move_statement() -> Any:
    """What the upsert changes on an existing row (``_REPLACED_ON_CONFLICT``, and
    ``_KEPT_UNLESS_KNOWN`` when given), for a row whose status may move there, built once."""
    table: Table = Order.__table__  # type: ignore[assignment]
    values: dict[str, Any] = {k: bindparam(f"moved_{k}") for k in _REPLACED_ON_CONFLICT}
    for keep in _KEPT_UNLESS_KNOWN:
        values[keep] = func.coalesce(bindparam(f"moved_{keep}"), table.c[keep])
    return (
        sql_update(table)
        .where(
            table.c.client_order_id == bindparam("moved_cid"),
            table.c.status == any_(bindparam("moved_from", type_=ARRAY(String))),
        )
        .values(**values)
    )


def _refused(
    session: Session, client_order_id: str, stored: str, wanted: str, where: dict[str, Any]
) -> None:
    record(
        session,
        EventType.ORDER_STATUS_MOVE_REFUSED,
        order_id=client_order_id,
        from_status=stored,
        to_status=wanted,
        **where,
    )


def _upsert_order(session: Session, values: dict[str, Any]) -> None:
    """Insert or update by client id; a later None never erases a known exchange id or price
    (the trigger price included: a stop moved beyond the mark, or adopted after a dead run,
    keeps the price the venue holds)."""
    session.execute(_upsert_statement(), values)


@functools.cache
def _upsert_statement() -> Any:
    """The ledger's upsert, built once: its values are bound at execution.

    Built per call (``.values(**row)`` and the ``excluded`` alias of the whole table) it
    cost a few ms of CPU, three times per stop move.
    """
    table: Table = Order.__table__  # type: ignore[assignment]
    stmt = insert(table)
    excluded = stmt.excluded
    changing: dict[str, Any] = {k: excluded[k] for k in _REPLACED_ON_CONFLICT}
    for keep in _KEPT_UNLESS_KNOWN:  # None never erases
        changing[keep] = func.coalesce(excluded[keep], table.c[keep])
    return stmt.on_conflict_do_update(index_elements=["client_order_id"], set_=changing)


def set_order_status(session: Session, client_order_id: str, status: str) -> None:
    """Move an existing ledger row's status (through the state machine, see record_order).

    One UPDATE whose WHERE admits only the statuses the state machine lets move to
    ``status``: the usual case is that one statement. A row it left alone is then read,
    locked, to tell a missing row (nothing to do) from a refused move (event).
    """
    new = OrderStatus(status)
    moved = session.execute(
        _status_move_statement(),
        {"cid": client_order_id, "to": new.value, "from": _moves_to(new)},
    )
    if moved.rowcount:  # type: ignore[attr-defined]
        return
    row = session.execute(
        select(Order.position_id, Order.exchange, Order.symbol, Order.status, Order.filled_quantity)
        .where(Order.client_order_id == client_order_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        return
    kept = next_order_status(row.status, new)
    if kept != new:  # backwards: keep what is stored, say so
        where = {"exchange": row.exchange, "symbol": row.symbol, "position_id": row.position_id}
        _refused(session, client_order_id, row.status, new, where)
        return
    session.execute(  # allowed after all: the row changed between the two statements
        _status_move_statement(),
        {"cid": client_order_id, "to": new.value, "from": [row.status]},
    )


@functools.cache
def _moves_to(new: OrderStatus) -> list[str]:
    """The stored statuses the state machine lets move to ``new`` (itself included)."""
    return [old.value for old in OrderStatus if order_move_allowed(old, new)]


@functools.cache
def _status_move_statement() -> Any:
    """``UPDATE orders SET status = :to WHERE client_order_id = :cid AND status
    = ANY(:from)`` on the table (no ORM bookkeeping), built once (an array parameter: an
    ``IN`` list would be rendered again at every execution)."""
    table: Table = Order.__table__  # type: ignore[assignment]
    return (
        sql_update(table)
        .where(
            table.c.client_order_id == bindparam("cid"),
            table.c.status == any_(bindparam("from", type_=ARRAY(String))),
        )
        .values(status=bindparam("to"))
    )


def order_row(session: Session, client_order_id: str) -> Order | None:
    return session.scalars(
        select(Order).where(Order.client_order_id == client_order_id)
    ).one_or_none()


def record_signal_outcome(
    session: Session, position: Position, status: str, reason: str | None
) -> None:
    """The outcome of the signal a position was opened for (opened / failed), with its event."""
    if position.signal_id is None:
        return
    signal = session.get(Signal, position.signal_id)
    if signal is None:
        return
    set_outcome(session, signal, status, reason, ctx=context(position), reason=reason)
