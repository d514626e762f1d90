"""Waves' upkeep: expiry of waves never processed in time, the dispatcher's queries (due
waves, empty windows), beat's fallback dispatch, and the helpers that turn a signal row into
the domain's signal and an event's context.

Apart from ``core/services/waves.py`` (claim, select, advance, complete, resume) so that the
ingest's dispatcher (``core/ingest/wave_dispatch.py``) and beat reach what they need without
the wave's processing machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, Signal, Wave
from core.db.session import unit_of_work
from core.domain.halts import OpeningBlock
from core.domain.positions import NON_TERMINAL, PositionStatus
from core.domain.signals import Action, Exchange
from core.domain.signals import Signal as DomainSignal
from core.domain.waves import OpenPositionInfo, WaveParams, WaveSelection
from core.events import EventType, Severity, record
from core.exchange import errors
from core.services import halts, venue_watch
from core.services.deps import Deps, UnitOfWork, record_alone_through
from core.services.opening_blocks import paused_key
from core.services.signal_outcomes import filter_signal, set_outcome

OPENINGS_PAUSED = "openings_paused"
HALTED = "halted"
HALTED_DETAIL = "openings halted (`vigil resume` lifts it)"


def domain_signal(row: Signal) -> DomainSignal:
    return DomainSignal(
        id=row.signal_id,
        symbol=row.symbol,
        exchange=Exchange(row.exchange),
        action=Action(row.action),
        score_week=row.score_week,
        score_month=row.score_month,
        timestamp=row.signal_ts,
    )


def about(wave: Wave) -> dict[str, Any]:
    """What every event of a wave says of it: its venue and its id."""
    return {"exchange": wave.exchange, "wave_id": wave.id}


def last_progress(wave: Wave) -> datetime:
    moment = wave.progress_at or wave.claimed_at or wave.created_at
    assert moment is not None
    return moment


def stalled(wave: Wave, now: datetime, settings: Settings) -> bool:
    """A wave in ``processing`` with no progress for ``wave_stall_seconds``: its processing
    died, and the next delivery (or beat's dispatch) resumes it."""
    stall = timedelta(seconds=settings.wave_stall_seconds)
    return wave.status == "processing" and last_progress(wave) <= now - stall


def expire_waves(
    session: Session, now: datetime, max_delay: float, *, wave_id: int | None = None
) -> list[int]:
    """Expire open waves whose deadline passed more than ``max_delay`` seconds ago (any
    exchange: a wave that late is not traded by anyone); their signals expire with them."""
    cutoff = now - timedelta(seconds=max_delay)
    stmt = (
        update(Wave)
        .where(Wave.status == "open", Wave.deadline < cutoff)
        .values(status="expired", processed_at=now)
        .returning(Wave.id, Wave.exchange, Wave.deadline)
        .execution_options(synchronize_session=False)
    )
    if wave_id is not None:
        stmt = stmt.where(Wave.id == wave_id)
    expired = session.execute(stmt).all()
    for wid, exchange, deadline in expired:
        count = expire_received(session, wid, "its wave was not processed in time")
        record(
            session,
            EventType.WAVE_EXPIRED,
            exchange=exchange,
            wave_id=wid,
            deadline=deadline,
            signals=count,
            max_delay_seconds=max_delay,
        )
    return [wid for wid, _, _ in expired]


def expire_received(session: Session, wave_id: int, reason: str) -> int:
    rows = session.scalars(
        select(Signal).where(Signal.wave_id == wave_id, Signal.status == "received")
    ).all()
    for row in rows:
        set_outcome(session, row, "expired", reason, wave_id=wave_id, reason=reason)
    return len(rows)


@dataclass(frozen=True)
class DueWaves:
    due: list[int]  # open, deadline passed
    next_deadline: datetime | None  # of the earliest open wave not due yet


def due_waves(exchange: str, now: datetime, uow: UnitOfWork = unit_of_work) -> DueWaves:
    """Open waves of ``exchange`` whose deadline has passed, and the next deadline."""
    with uow() as session:
        due = _wave_ids(session, exchange, "open", Wave.deadline <= now, Wave.deadline)
        upcoming = session.scalar(
            select(func.min(Wave.deadline)).where(
                Wave.exchange == exchange, Wave.status == "open", Wave.deadline > now
            )
        )
    return DueWaves(due, upcoming)


def wave_exists(exchange: str, window_start: datetime, uow: UnitOfWork = unit_of_work) -> bool:
    with uow() as session:
        found = session.scalar(
            select(Wave.id).where(Wave.exchange == exchange, Wave.window_start == window_start)
        )
    return found is not None


def record_wave_not_found(
    exchange: str, window_start: datetime, window_end: datetime, uow: UnitOfWork = unit_of_work
) -> None:
    """A window closed without a single signal: the signal service may be silent."""
    record_alone_through(
        uow,
        EventType.WAVE_NOT_FOUND,
        severity=Severity.INFO,
        exchange=exchange,
        window_start=window_start,
        window_end=window_end,
        reason="no signals in the window",
    )


@dataclass
class DispatchReport:
    expired: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)
    stalled: list[int] = field(default_factory=list)


def dispatch_due_waves(deps: Deps, enqueue: Callable[[int], None]) -> DispatchReport:
    """Beat's fallback of the ingest's dispatcher: expire overdue waves (any exchange),
    enqueue this exchange's due waves and the stalled ones (resumed by process_wave)."""
    now = deps.clock.now()
    report = DispatchReport()
    stall_before = now - timedelta(seconds=deps.settings.wave_stall_seconds)
    with deps.unit_of_work() as session:
        report.expired = expire_waves(session, now, deps.settings.wave_max_delay)
        exchange = deps.exchange_name
        due = Wave.deadline <= now
        report.dispatched = _wave_ids(session, exchange, "open", due, Wave.deadline)
        stalled = func.coalesce(Wave.progress_at, Wave.claimed_at) <= stall_before
        report.stalled = _wave_ids(session, exchange, "processing", stalled, Wave.id)
    for wave_id in report.dispatched + report.stalled:
        enqueue(wave_id)
    return report


def _wave_ids(
    session: Session,
    exchange: str,
    status: str,
    due: ColumnElement[bool],
    order: Any,
) -> list[int]:
    """The ids of ``exchange``'s waves in ``status`` that are ``due``."""
    query = select(Wave.id).where(Wave.exchange == exchange, Wave.status == status, due)
    return list(session.scalars(query.order_by(order)))


def wave_members(
    session: Session, wave: Wave
) -> tuple[list[tuple[Signal, Position | None]], WaveSelection]:
    stored = (wave.stats or {}).get("selection") or {}
    ids: list[int] = list(stored.get("to_open", []))
    rows = {row.id: row for row in session.scalars(select(Signal).where(Signal.id.in_(ids)))}
    positions = {
        p.signal_id: p for p in session.scalars(select(Position).where(Position.signal_id.in_(ids)))
    }
    members = [(rows[i], positions.get(i)) for i in ids]
    selection = WaveSelection(
        tuple(domain_signal(row) for row, _ in members), int(stored.get("target", 0)), ()
    )
    return members, selection


def give_up(session: Session, wave: Wave, now: datetime) -> None:
    """A wave resumed too often: its unstarted members fail, the wave completes."""
    members, _ = wave_members(session, wave)
    for row, position in members:
        if position is None and row.status == "selected":
            why = "wave processing gave up"
            set_outcome(session, row, "failed", why, reason=why)
    late = expire_received(session, wave.id, "its wave gave up")
    wave.status, wave.processed_at = "completed", now
    wave.stats = {**(wave.stats or {}), "gave_up": True, "late": late}
    record(
        session,
        EventType.TASK_GAVE_UP,
        **about(wave),
        attempts=wave.attempts,
        reason="wave resumed too often; openings in flight are left to recovery",
    )
    record(
        session,
        EventType.WAVE_COMPLETED,
        **about(wave),
        gave_up=True,
    )


def open_position_infos(
    session: Session, exchange: str, settings: Settings
) -> list[OpenPositionInfo]:
    """Every non-terminal position of the exchange, intermediate ones included."""
    positions = session.scalars(
        select(Position).where(
            Position.exchange == exchange,
            Position.status.in_([s.value for s in NON_TERMINAL]),
        )
    ).all()
    return [
        OpenPositionInfo(
            p.exchange,
            p.symbol,
            PositionStatus(p.status),
            # an opening not filled yet will cost what a wave position costs
            p.quantity * p.entry_price
            if p.entry_price is not None and p.quantity > 0
            else settings.position_size_usdt,
        )
        for p in positions
    ]


def balance_unless_halted(deps: Deps) -> tuple[Decimal, bool]:
    """The free balance, or (0, True) when openings are halted on this venue.

    Halted (a refused key, most likely) the balance cannot be read and is not needed; a
    refusal met right here halts the venue (core/services/venue_watch.py) the same way.
    """
    with deps.unit_of_work() as session:
        if halts.block_for(session, deps.exchange_name) is OpeningBlock.HALTED:
            return Decimal(0), True
    try:
        return deps.exchange.free_balance(), False
    except errors.AuthenticationFailed as exc:
        venue_watch.note_failure(deps, exc)
        return Decimal(0), True


def all_halted(session: Session, rows: Sequence[Signal]) -> WaveSelection:
    """A wave claimed while openings are halted: every signal filtered ``halted``, nothing
    selected (the wave then completes on its first advance)."""
    for row in rows:
        filter_signal(session, row, HALTED, HALTED_DETAIL)
    return WaveSelection((), 0, ())


def opening_blocked(deps: Deps, session: Session, exchange: str) -> str | None:
    """Why no candidate may start now: a halt (``halted``), a paused venue (maintenance, or
    insufficient funds earlier: ``openings_paused``), or None."""
    block = halts.block_for(session, exchange)
    if block is not None:
        return block.value
    return OPENINGS_PAUSED if deps.redis.exists(paused_key(exchange)) else None


def wave_params(settings: Settings) -> WaveParams:
    """The wave rules as the settings state them."""
    return WaveParams(
        window=timedelta(seconds=settings.wave_interval),
        grace=timedelta(seconds=settings.wave_grace),
        min_score_week=settings.min_score_week,
        min_score_month=settings.min_score_month,
        stoplist=frozenset(s.upper() for s in settings.stoplist),
        max_trades_per_wave=settings.max_trades_per_wave,
        buffer=settings.wave_buffer,
        max_open_positions=settings.max_open_positions,
        max_exposure_quote=settings.max_exposure_usdt,
        position_size_quote=settings.position_size_usdt,
        leverage=Decimal(settings.leverage),
    )
