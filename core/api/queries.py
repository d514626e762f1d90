"""Read-only queries over the event log and positions, shared by the API and ``vigil events``.

Filters are plain dataclasses so both front ends accept the same things: symbol, type or
status, a ``since`` (ISO time or a relative ``15m`` / ``2h`` / ``3d``), a correlation id, a
position id, and a limit. The newest rows come first, except in a timeline (one position or
one correlation id), which reads oldest-first like the story it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.db.models import Event, Position
from core.events import jsonable

MAX_LIMIT = 1000
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class BadQuery(ValueError):
    """A filter value that cannot be understood; the message says which and why."""


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """``2026-11-23T12:00:00Z`` or ``15m`` / ``2h`` / ``3d`` (ago); None passes through."""
    if value is None or value == "":
        return None
    match = _RELATIVE.match(value.strip().lower())
    if match:
        try:
            return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        except (OverflowError, ValueError):
            raise BadQuery(f"since: {value!r:.40} reaches before the calendar starts") from None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"since: expected ISO time or 15m/2h/3d, got {value!r:.60}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _whole_number(value: str | int, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadQuery(f"{name}: expected a number, got {value!r:.60}") from None


def parse_limit(value: str | int | None, default: int = 100) -> int:
    if value is None or value == "":
        return default
    limit = _whole_number(value, "limit")
    if limit < 1:
        raise BadQuery("limit: must be at least 1")
    return min(limit, MAX_LIMIT)


MAX_ID = 2**63 - 1


def parse_id(value: str | None, name: str) -> int | None:
    """A row id (1 .. 2**63-1, PostgreSQL's bigint); None or empty passes through."""
    if value is None or value == "":
        return None
    number = _whole_number(value, name)
    if not 1 <= number <= MAX_ID:
        raise BadQuery(f"{name}: out of range")
    return number


@dataclass(frozen=True)
class EventFilter:
    symbol: str | None = None
    types: tuple[str, ...] = ()
    severity: str | None = None
    since: datetime | None = None
    correlation_id: str | None = None
    position_id: int | None = None
    limit: int = 100

    @property
    def is_timeline(self) -> bool:
        return self.correlation_id is not None or self.position_id is not None


def _event_query(f: EventFilter) -> Select[Event]:
    stmt = select(Event)
    if f.symbol:
        stmt = stmt.where(Event.symbol == f.symbol.upper())
    if f.types:
        stmt = stmt.where(Event.type.in_(f.types))
    if f.severity:
        stmt = stmt.where(Event.severity == f.severity.lower())
    if f.since is not None:
        stmt = stmt.where(Event.created_at >= f.since)
    if f.correlation_id:
        stmt = stmt.where(Event.correlation_id == f.correlation_id)
    if f.position_id is not None:
        stmt = stmt.where(Event.position_id == f.position_id)
    return stmt


def list_events(session: Session, f: EventFilter) -> list[Event]:
    """Matching events; newest first, or oldest first for a timeline."""
    stmt = _event_query(f)
    if f.is_timeline:
        return list(session.scalars(stmt.order_by(Event.id).limit(f.limit)))
    return list(session.scalars(stmt.order_by(Event.id.desc()).limit(f.limit)))


def position_correlation(session: Session, position_id: int) -> str | None:
    """A position's correlation id: its timeline includes events written before it had an id."""
    return session.scalars(
        select(Position.correlation_id).where(Position.id == position_id)
    ).one_or_none()


@dataclass(frozen=True)
class PositionFilter:
    symbol: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    correlation_id: str | None = None
    limit: int = 100


def list_positions(session: Session, f: PositionFilter) -> list[Position]:
    stmt = select(Position)
    if f.symbol:
        stmt = stmt.where(Position.symbol == f.symbol.upper())
    if f.statuses:
        stmt = stmt.where(Position.status.in_(f.statuses))
    if f.since is not None:
        stmt = stmt.where(Position.updated_at >= f.since)
    if f.correlation_id:
        stmt = stmt.where(Position.correlation_id == f.correlation_id)
    return list(session.scalars(stmt.order_by(Position.id.desc()).limit(f.limit)))


EVENT_FIELDS = (
    "id",
    "created_at",
    "type",
    "severity",
    "exchange",
    "symbol",
    "position_id",
    "order_id",
    "correlation_id",
    "data",
)
POSITION_FIELDS = (
    "id",
    "exchange",
    "symbol",
    "side",
    "status",
    "quantity",
    "requested_quantity",
    "entry_price",
    "stop_price",
    "exit_price",
    "realized_pnl",
    "fees",
    "leverage",
    "correlation_id",
    "close_reason",
    "opened_at",
    "closed_at",
    "created_at",
    "updated_at",
)


def event_dict(event: Event) -> dict[str, Any]:
    return {name: jsonable(getattr(event, name)) for name in EVENT_FIELDS}


def position_dict(position: Position) -> dict[str, Any]:
    return {name: jsonable(getattr(position, name)) for name in POSITION_FIELDS}
