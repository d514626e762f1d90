"""Trailing's durable state: the settings as the domain's parameters, the ``trailing_stops``
row as the domain's state and back, and the row a new active position starts with.

Apart from ``core/services/trailing.py`` (the move itself) so that the opening, which creates
the row, and the price path, which reads it, need not load the move's machinery.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, TrailingStop
from core.domain.positions import PositionStatus
from core.domain.protection import StopOwner
from core.domain.sides import Side
from core.domain.trailing import (
    TrailingParams,
    TrailingState,
    activation_price,
)
from core.events import EventType, record
from core.services.positions import context


def trailing_params(settings: Settings) -> TrailingParams:
    """The domain's parameters from the operator's settings."""
    minutes = settings.trailing_time_activation_minutes
    return TrailingParams(
        activation_pct=settings.trailing_activation_percent,
        callback_pct=settings.trailing_callback_percent,
        breakeven_at_pct=settings.trailing_breakeven_percent,
        taker_fee_pct=settings.taker_fee_percent,
        time_activation_after=timedelta(minutes=minutes) if minutes else None,
        time_activation_min_profit_pct=settings.trailing_time_activation_min_profit_percent,
        min_step_pct=settings.trailing_min_step_percent,
        min_update_interval=timedelta(seconds=settings.trailing_min_update_interval),
        min_distance_pct=settings.trailing_min_distance_percent,
    )


def state_of(row: TrailingStop, position: Position) -> TrailingState:
    """The durable row (plus the position's side, entry, size, age) as the domain's state."""
    entry = position.entry_price
    assert entry is not None, f"position {position.id} is active without an entry price"
    return TrailingState(
        side=Side(position.side),
        entry_price=entry,
        quantity=position.quantity,
        opened_at=position.opened_at or position.created_at,
        activation_price=row.activation_price or entry,
        highest_price=row.highest_price or entry,
        lowest_price=row.lowest_price or entry,
        stop_price=row.current_stop if row.current_stop is not None else position.stop_price,
        activated=row.state == "active",
        activated_at=row.activated_at,
        breakeven_triggered=row.breakeven_done,
        update_count=row.update_count,
        last_update_at=row.last_update_at,
        pending_stop=row.pending_stop,
    )


def store_if_active(
    session: Session, position_id: int, state: TrailingState, heartbeat_at: datetime
) -> bool:
    """The state (and the heartbeat) as one UPDATE of the row, only while the position is
    active: no load of either, and none of the ORM's flush (a cached statement instead of the
    unit of work's bookkeeping). False: not active any more, nothing written."""
    written = session.execute(
        _store_if_active_statement(),
        {
            "stored_id": position_id,
            "new_state": "active" if state.activated else "inactive",
            "new_activated_at": state.activated_at,
            "new_highest": state.highest_price,
            "new_lowest": state.lowest_price,
            "new_stop": state.stop_price,
            "new_breakeven": state.breakeven_triggered,
            "new_count": state.update_count,
            "new_last_update": state.last_update_at,
            "new_pending": state.pending_stop,
            "new_heartbeat": heartbeat_at,
        },
    )
    return bool(written.rowcount)  # type: ignore[attr-defined]


@functools.cache
def _store_if_active_statement() -> Any:
    """The UPDATE behind ``store_if_active``, built once (values bound at execution)."""
    rows: Table = TrailingStop.__table__  # type: ignore[assignment]
    positions: Table = Position.__table__  # type: ignore[assignment]
    active = (
        select(positions.c.id)
        .where(
            positions.c.id == bindparam("stored_id"),
            positions.c.status == PositionStatus.ACTIVE.value,
            positions.c.entry_price.is_not(None),
        )
        .exists()
    )
    return (
        update(rows)
        .where(rows.c.position_id == bindparam("stored_id"), active)
        .values(
            state=bindparam("new_state"),
            activated_at=bindparam("new_activated_at"),
            highest_price=bindparam("new_highest"),
            lowest_price=bindparam("new_lowest"),
            current_stop=bindparam("new_stop"),
            breakeven_done=bindparam("new_breakeven"),
            update_count=bindparam("new_count"),
            last_update_at=bindparam("new_last_update"),
            pending_stop=bindparam("new_pending"),
            heartbeat_at=bindparam("new_heartbeat"),
        )
    )


def load_active(session: Session, position_id: int) -> tuple[Position, TrailingStop] | None:
    """The active position and its trailing row, fresh, in one query; None otherwise."""
    found = session.execute(
        select(Position, TrailingStop)
        .join(TrailingStop, TrailingStop.position_id == Position.id)
        .where(Position.id == position_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if found is None:
        return None
    position, row = found
    if position.status != PositionStatus.ACTIVE or position.entry_price is None:
        return None
    return position, row


def active_row(session: Session, position: Position) -> tuple[Position, TrailingStop] | None:
    """``load_active`` for a position already loaded in ``session``'s transaction: only its
    trailing row is read."""
    if position.status != PositionStatus.ACTIVE or position.entry_price is None:
        return None
    row = session.get(TrailingStop, position.id)
    return None if row is None else (position, row)


def start_trailing(
    session: Session, position: Position, settings: Settings, now: datetime
) -> TrailingStop:
    """The trailing row of a position that just became active: inactive, owned by trailing,
    activation at ``trailing_activation_percent`` from the entry."""
    assert position.entry_price is not None
    activation = activation_price(
        Side(position.side), position.entry_price, settings.trailing_activation_percent
    )
    row = TrailingStop(
        position_id=position.id,
        state="inactive",
        owner=StopOwner.TRAILING.value,
        highest_price=position.entry_price,
        lowest_price=position.entry_price,
        current_stop=position.stop_price,
        activation_price=activation,
        heartbeat_at=now,
        breakeven_done=False,
        update_count=0,
    )
    session.add(row)
    record(
        session,
        EventType.TRAILING_STOP_CREATED,
        ctx=context(position),
        entry_price=position.entry_price,
        activation_price=activation,
        stop_price=position.stop_price,
    )
    return row
