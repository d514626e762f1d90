"""Halt and resume: the stop on new openings, kept as rows in PostgreSQL.

Why rows: every worker, beat and the ingest must see a halt the moment it is made, and a
restart must not forget it; an in-memory flag or a Redis key (which an eviction or a restart
loses) cannot promise that. Each halt says who made it, when and why (``halts`` table,
migration 0008). ``halted`` and ``resumed`` are critical events: they go out
through the alert outbox like any other page.

What a halt stops: the start of new openings (``core/services/waves.py`` filters the wave's
remaining candidates with reason ``halted``, ``core/services/opening.py`` refuses an entry
not sent yet). What it does not stop: protection, trailing, aged closes, reconciliation,
zombie cleanup and closes by hand, which never look at it.

Idempotent: a halt already in force for the same (source, scope) is returned, not repeated
(the partial unique index ``uq_halts_in_force`` decides races); resuming with nothing in
force changes nothing and records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.db.models import Halt
from core.db.session import unit_of_work
from core.domain.halts import (
    ALL_VENUES,
    HaltSource,
    HaltView,
    OpeningBlock,
    opening_block,
)
from core.events import EventType, Severity, jsonable_fields, record
from core.services.deps import UnitOfWork


@dataclass(frozen=True, slots=True)
class HaltState:
    """One halt, in force or lifted."""

    id: int
    scope: str
    source: str
    reason: str
    halted_by: str
    halted_at: datetime
    resumed_at: datetime | None = None
    resumed_by: str | None = None

    @classmethod
    def of(cls, row: Halt) -> HaltState:
        return cls(
            row.id,
            row.scope,
            row.source,
            row.reason,
            row.halted_by,
            row.halted_at,
            row.resumed_at,
            row.resumed_by,
        )

    def view(self) -> HaltView:
        return HaltView(HaltSource(self.source), self.scope)

    def as_dict(self) -> dict[str, Any]:
        return jsonable_fields(self)


@dataclass(frozen=True, slots=True)
class HaltResult:
    halt: HaltState
    created: bool  # False: the same halt was already in force


def in_force(session: Session, exchange: str | None = None) -> list[HaltState]:
    """Halts in force, oldest first; with ``exchange``, only those that apply to it."""
    query = select(Halt).where(Halt.resumed_at.is_(None)).order_by(Halt.halted_at, Halt.id)
    if exchange is not None:
        query = query.where(Halt.scope.in_([ALL_VENUES, exchange]))
    return [HaltState.of(row) for row in session.scalars(query)]


def block_for(session: Session, exchange: str) -> OpeningBlock | None:
    """Why ``exchange`` may not open a position now, or None (one indexed query)."""
    return opening_block((h.view() for h in in_force(session, exchange)), exchange)


def current(uow: UnitOfWork = unit_of_work) -> list[HaltState]:
    """Halts in force (own transaction), for /health, /metrics, the CLI and the live view."""
    with uow() as session:
        return in_force(session)


def halt(
    reason: str,
    halted_by: str,
    *,
    now: datetime,
    source: HaltSource = HaltSource.OPERATOR,
    scope: str = ALL_VENUES,
    uow: UnitOfWork = unit_of_work,
) -> HaltResult:
    """Stop new openings (for ``scope``: a venue, or all). Safe to call any number of times."""
    reason = (reason or "no reason given").strip()[:1000]
    with uow() as session:
        inserted = session.execute(
            insert(Halt)
            .values(
                scope=scope,
                source=source.value,
                reason=reason,
                halted_by=halted_by[:120],
                halted_at=now,
            )
            .on_conflict_do_nothing(
                index_elements=["source", "scope"], index_where=Halt.resumed_at.is_(None)
            )
            .returning(Halt.id)
        ).scalar_one_or_none()
        row = session.scalars(
            select(Halt).where(
                Halt.source == source.value, Halt.scope == scope, Halt.resumed_at.is_(None)
            )
        ).one()
        if inserted is not None:
            _record_halt_event(session, row, lifted=False, halted_by=row.halted_by)
        return HaltResult(HaltState.of(row), created=inserted is not None)


#: Per kind of halt, its (event, severity) when it starts and when it is lifted: a venue's
#: maintenance only pauses openings and is lifted by the engine itself; any other halt (the
#: operator's, a revoked key) stops trading and is critical both ways.
_HALT_EVENTS: dict[bool, tuple[tuple[EventType, Severity], tuple[EventType, Severity]]] = {
    True: (
        (EventType.OPENINGS_PAUSED, Severity.WARNING),
        (EventType.OPENINGS_RESUMED, Severity.INFO),
    ),
    False: ((EventType.HALTED, Severity.CRITICAL), (EventType.RESUMED, Severity.CRITICAL)),
}


def _record_halt_event(session: Session, row: Halt, *, lifted: bool, **detail: Any) -> None:
    started, ended = _HALT_EVENTS[row.source == HaltSource.MAINTENANCE]
    event, severity = ended if lifted else started
    record(session, event, severity=severity, **detail, **_about(row))


def _about(row: Halt) -> dict[str, Any]:
    """What every halt and resume event says of its halt."""
    return {
        "exchange": None if row.scope == ALL_VENUES else row.scope,
        "halt_id": row.id,
        "source": row.source,
        "scope": row.scope,
        "reason": row.reason,
    }


def resume(
    resumed_by: str,
    *,
    now: datetime,
    sources: Sequence[HaltSource] | None = None,
    scope: str | None = None,
    uow: UnitOfWork = unit_of_work,
) -> list[HaltState]:
    """Lift the halts in force (of ``sources`` / ``scope`` if given); returns those lifted.

    `vigil resume` lifts every halt, the operator's and the engine's (a revoked key that was
    replaced); a venue that answers again lifts only its own maintenance pause.
    """
    with uow() as session:
        query = update(Halt).where(Halt.resumed_at.is_(None))
        if sources is not None:
            query = query.where(Halt.source.in_([s.value for s in sources]))
        if scope is not None:
            query = query.where(Halt.scope == scope)
        ids = session.scalars(
            query.values(resumed_at=now, resumed_by=resumed_by[:120]).returning(Halt.id)
        ).all()
        if not ids:
            return []
        rows = session.scalars(select(Halt).where(Halt.id.in_(ids)).order_by(Halt.id)).all()
        for row in rows:
            halted_for = (row.resumed_at - row.halted_at) if row.resumed_at else None
            _record_halt_event(
                session,
                row,
                lifted=True,
                resumed_by=row.resumed_by,
                halted_for_seconds=None if halted_for is None else halted_for.total_seconds(),
            )
        return [HaltState.of(row) for row in rows]
