"""Wave processing: claim once, select once, open until N succeed on any number of workers.

A wave row goes ``open -> processing -> completed`` (or ``open -> expired`` when it was
never processed in time). Each step is one transaction and idempotent, so a delivery of
``process_wave`` may come twice, from the ingest and from beat at once, or after a worker
was killed mid-wave, and the result is the same:

1. **Claim** with a conditional UPDATE (``status open -> processing``); only one caller
   wins. In the same transaction the wave is **selected** (``select_wave`` on its signals,
   the non-terminal positions, and the free balance read once from the exchange): filtered
   signals get their reason, the ranked candidates and the target N are stored on the wave.
   The selection is never recomputed, so a re-run cannot change its mind.
2. **Advance** (``advance_wave``), under ``SELECT ... FOR UPDATE`` of the wave row: derive
   each candidate's state from its position (the database links a signal to at most one
   position), ask ``plan_launches`` which candidates to start, create their positions
   (``pending_entry``, the signal's correlation id), commit, then hand each to ``launch``.
   Up to N openings run at once on the ``orders`` queue; each one, when finished, triggers
   another advance, which starts the next candidate if one failed. At most N can ever be
   open or in flight, so "until N succeed" holds exactly.
3. **Complete** when nothing is in flight and nothing more may start: candidates not needed
   are filtered (``wave_target_reached`` / ``openings_paused`` / ``halted``: see
   core/services/halts.py), every signal of the wave
   has its outcome, counts go into ``WAVE_COMPLETED``.

A wave in ``processing`` that made no progress for ``VIGIL_WAVE_STALL_SECONDS`` (its worker
died between steps, or the launch of an opening was lost) is **resumed** by the beat's
dispatcher: openings created but never picked up are launched again (the opening is
idempotent), and the wave is advanced. ``attempts`` bounds the resumes.

``launch`` is injected (the Celery task enqueues the opening and the advance after it), so
this module never imports Celery and tests can run a wave step by step.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, Signal, Wave
from core.db.session import unit_of_work
from core.domain.halts import OpeningBlock
from core.domain.positions import INTERMEDIATE, NON_TERMINAL, PositionStatus
from core.domain.signals import Action, Exchange
from core.domain.signals import Signal as DomainSignal
from core.domain.wave_progress import LaunchPlan, MemberState, plan_launches
from core.domain.waves import (
    FilterReason,
    OpenPositionInfo,
    WaveContext,
    WaveParams,
    WaveSelection,
    select_wave,
)
from core.events import EventContext, EventType, Severity, record
from core.exchange import errors
from core.services import halts, symbol_settings, venue_watch
from core.services.deps import Deps
from core.services.opening import paused_key
from core.services.positions import NewPosition, create_position

log = logging.getLogger(__name__)

Launch = Callable[[int], None]
"""Start the opening of one position (by id); called after the position is committed."""

TARGET_REACHED = "wave_target_reached"
OPENINGS_PAUSED = "openings_paused"
HALTED = "halted"
HALTED_DETAIL = "openings halted (`vigil resume` lifts it)"
ALREADY_OPEN = "already_open"
RISK_LIMITS = frozenset(
    {FilterReason.MAX_OPEN_POSITIONS, FilterReason.MAX_EXPOSURE, FilterReason.INSUFFICIENT_BALANCE}
)


class WaveOutcome(StrEnum):
    STARTED = "started"  # claimed and selected by this call
    DUPLICATE = "duplicate"  # already claimed by another delivery (or done)
    RESUMED = "resumed"  # stalled in processing, resumed by this call
    NOT_DUE = "not_due"  # its deadline has not passed yet
    NOT_FOUND = "not_found"
    OTHER_EXCHANGE = "other_exchange"  # belongs to an exchange this process does not trade
    EXPIRED = "expired"  # never processed in time: its signals expired
    ADVANCED = "advanced"  # an advance step ran
    GAVE_UP = "gave_up"


@dataclass
class WaveReport:
    wave_id: int
    outcome: WaveOutcome
    launched: list[int] = field(default_factory=list)  # position ids whose opening started
    completed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "wave_id": self.wave_id,
            "outcome": self.outcome.value,
            "launched": self.launched,
            "completed": self.completed,
        }


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


# --- process_wave: claim, select, or recognise a duplicate ------------------------------------


def process_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Process the wave once, whoever else is delivered the same wave (see module doc)."""
    now = deps.clock.now()
    with unit_of_work() as session:
        wave = session.get(Wave, wave_id)
        if wave is None:
            record(
                session,
                EventType.WAVE_NOT_FOUND,
                severity=Severity.WARNING,
                exchange=deps.exchange_name,
                wave_id=wave_id,
                reason="no such wave",
            )
            return WaveReport(wave_id, WaveOutcome.NOT_FOUND)
        exchange, status, deadline = wave.exchange, wave.status, wave.deadline
    if exchange != deps.exchange_name:
        log.warning(
            "wave %s is for %s, this process trades %s", wave_id, exchange, deps.exchange_name
        )
        return WaveReport(wave_id, WaveOutcome.OTHER_EXCHANGE)
    if status == "open":
        if now < deadline:
            return WaveReport(wave_id, WaveOutcome.NOT_DUE)
        if now > deadline + timedelta(seconds=deps.settings.wave_max_delay):
            with unit_of_work() as session:
                if expire_waves(session, now, deps.settings.wave_max_delay, wave_id=wave_id):
                    return WaveReport(wave_id, WaveOutcome.EXPIRED)
        elif claim_and_select(deps, wave_id):
            report = advance_wave(deps, wave_id, launch)
            report.outcome = WaveOutcome.STARTED
            return report
    return _already_claimed(deps, wave_id, launch)


def _already_claimed(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Another delivery claimed (or finished, or expired) the wave; resume it if stalled."""
    now = deps.clock.now()
    stall = timedelta(seconds=deps.settings.wave_stall_seconds)
    with unit_of_work() as session:
        wave = session.get(Wave, wave_id)
        assert wave is not None
        stalled = wave.status == "processing" and _last_progress(wave) <= now - stall
        if not stalled:
            record(
                session,
                EventType.WAVE_DUPLICATE_DETECTED,
                exchange=wave.exchange,
                wave_id=wave_id,
                status=wave.status,
                claimed_at=wave.claimed_at,
            )
    if stalled:
        return resume_wave(deps, wave_id, launch)
    # An earlier delivery may have died between the claim and its first advance: advancing
    # is idempotent, so a duplicate delivery makes sure the wave is moving.
    report = advance_wave(deps, wave_id, launch)
    report.outcome = WaveOutcome.DUPLICATE
    return report


def claim_and_select(deps: Deps, wave_id: int) -> bool:
    """Claim the wave (conditional UPDATE) and store its selection, in one transaction.

    False when another delivery claimed it first (or it is not open and due). The free
    balance is read from the exchange once, before the transaction, so no row lock is held
    across a network call.
    """
    params = wave_params(deps.settings)
    balance, halted = _balance_unless_halted(deps)
    now = deps.clock.now()
    with unit_of_work() as session:
        claimed = session.execute(
            update(Wave)
            .where(Wave.id == wave_id, Wave.status == "open", Wave.deadline <= now)
            .values(
                status="processing", claimed_at=now, progress_at=now, attempts=Wave.attempts + 1
            )
            .returning(Wave.id)
            .execution_options(synchronize_session=False)
        ).first()
        if claimed is None:
            return False
        wave = session.get(Wave, wave_id, populate_existing=True)
        assert wave is not None
        rows = session.scalars(
            select(Signal)
            .where(Signal.wave_id == wave_id, Signal.status == "received")
            .order_by(Signal.id)
        ).all()
        open_now = _open_positions(session, wave.exchange, deps.settings)
        if halted:
            selection = _all_halted(session, rows)
        else:
            stoplisted = symbol_settings.disabled_among(
                deps.settings, deps.redis, wave.exchange, {row.symbol for row in rows}
            )
            selection = select_wave(
                [domain_signal(row) for row in rows],
                WaveContext(open_now, balance),
                replace(params, stoplist=stoplisted),
            )
        by_id = {row.signal_id: row for row in rows}
        for filtered in selection.filtered:
            _filter(session, by_id[filtered.signal.id], str(filtered.reason), filtered.detail)
        candidates = [by_id[s.id] for s in selection.to_open]
        for rank, row in enumerate(candidates):
            row.status = "selected"
            record(
                session,
                EventType.SIGNAL_SELECTED,
                ctx=signal_context(row),
                signal_id=row.signal_id,
                wave_id=wave_id,
                rank=rank,
                target=selection.target,
            )
        reasons = Counter(str(f.reason) for f in selection.filtered)
        reasons.update({HALTED: len(rows)} if halted else {})
        limited = {r: n for r, n in reasons.items() if r in RISK_LIMITS}
        if limited:  # one event per wave for the operator, beside each signal's own
            record(
                session,
                EventType.RISK_LIMITS_EXCEEDED,
                severity=Severity.WARNING,
                exchange=wave.exchange,
                wave_id=wave_id,
                signals_held_back=limited,
                open_positions=len(open_now),
                max_open_positions=params.max_open_positions,
                max_exposure=params.max_exposure_quote,
                balance=balance,
            )
        wave.stats = {
            "selection": {"target": selection.target, "to_open": [row.id for row in candidates]},
            "signals": len(rows),
            "filtered": dict(reasons),
            "balance": str(balance),
            "open_positions": len(open_now),
        }
        record(
            session,
            EventType.WAVE_STARTED,
            exchange=wave.exchange,
            wave_id=wave_id,
            window_start=wave.window_start,
            signals=len(rows),
            candidates=len(candidates),
            target=selection.target,
            filtered=dict(reasons),
            balance=balance,
            open_positions=len(open_now),
            attempt=wave.attempts,
        )
    return True


def _balance_unless_halted(deps: Deps) -> tuple[Decimal, bool]:
    """The free balance, or (0, True) when openings are halted on this venue.

    Halted (a refused key, most likely) the balance cannot be read and is not needed; a
    refusal met right here halts the venue (core/services/venue_watch.py) the same way.
    """
    with unit_of_work() as session:
        if halts.block_for(session, deps.exchange_name) is OpeningBlock.HALTED:
            return Decimal(0), True
    try:
        return deps.exchange.free_balance(), False
    except errors.AuthenticationFailed as exc:
        venue_watch.note_failure(deps, exc)
        return Decimal(0), True


def _all_halted(session: Session, rows: Sequence[Signal]) -> WaveSelection:
    """A wave claimed while openings are halted: every signal filtered ``halted``, nothing
    selected (the wave then completes on its first advance)."""
    for row in rows:
        _filter(session, row, HALTED, HALTED_DETAIL)
    return WaveSelection((), 0, ())


def _open_positions(session: Session, exchange: str, settings: Settings) -> list[OpenPositionInfo]:
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


# --- advance: start what the plan says, complete when done ----------------------------------


def advance_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Move a wave in ``processing`` on: start candidates, or complete it. Idempotent."""
    now = deps.clock.now()
    launched: list[int] = []
    completed = False
    with unit_of_work() as session:
        wave = session.get(Wave, wave_id, with_for_update=True, populate_existing=True)
        if wave is None or wave.status != "processing":
            return WaveReport(wave_id, WaveOutcome.ADVANCED)
        blocked = _opening_blocked(deps, session, wave.exchange)
        paused = blocked is not None
        members, selection = _members(session, wave)
        states = [_member_state(row, position) for row, position in members]
        plan = plan_launches(selection, states, openings_paused=paused)
        while plan.launch:
            for index in plan.launch:
                row = members[index][0]
                position = _start(session, wave, row, index)
                if position is None:
                    states[index] = MemberState.SKIPPED
                else:
                    states[index] = MemberState.IN_FLIGHT
                    launched.append(position.id)
            plan = plan_launches(selection, states, openings_paused=paused)
        progress = dict(Counter(str(s) for s in states))
        if plan.done:
            _complete(session, wave, members, states, plan, now, blocked)
            completed = True
        elif launched or progress != (wave.stats or {}).get("progress"):
            wave.progress_at = now
            wave.stats = {**(wave.stats or {}), "progress": progress}
    for position_id in launched:
        launch(position_id)
    return WaveReport(wave_id, WaveOutcome.ADVANCED, launched, completed)


def _opening_blocked(deps: Deps, session: Session, exchange: str) -> str | None:
    """Why no candidate may start now: a halt (``halted``), a paused venue (maintenance, or
    insufficient funds earlier: ``openings_paused``), or None."""
    block = halts.block_for(session, exchange)
    if block is not None:
        return block.value
    return OPENINGS_PAUSED if deps.redis.exists(paused_key(exchange)) else None


def _members(
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


def _member_state(row: Signal, position: Position | None) -> MemberState:
    if position is None:
        return MemberState.SKIPPED if row.status == "filtered" else MemberState.UNSTARTED
    status = PositionStatus(position.status)
    if status in (PositionStatus.FAILED, PositionStatus.ROLLED_BACK):
        return MemberState.FAILED
    if status in INTERMEDIATE or (
        status is PositionStatus.CLOSING and position.close_reason == "rollback"
    ):
        return MemberState.IN_FLIGHT
    return MemberState.OPENED  # active, or closed/closing again after it was open


def _start(session: Session, wave: Wave, row: Signal, rank: int) -> Position | None:
    """Create the candidate's position; None (and the signal filtered) if its symbol is taken."""
    position = create_position(
        session,
        NewPosition(
            exchange=row.exchange,
            symbol=row.symbol,
            side=Action(row.action).side.value,
            signal_id=row.id,
            correlation_id=row.correlation_id,
        ),
        wave_id=wave.id,
        signal_id=row.signal_id,
        rank=rank,
    )
    if position is None:
        _filter(session, row, ALREADY_OPEN, f"{row.symbol} got a position before this wave's")
    return position


def _complete(
    session: Session,
    wave: Wave,
    members: Sequence[tuple[Signal, Position | None]],
    states: Sequence[MemberState],
    plan: LaunchPlan,
    now: datetime,
    blocked: str | None,
) -> None:
    """Every signal of the wave gets its outcome; the wave records its counts."""
    reason = blocked or TARGET_REACHED
    detail = HALTED_DETAIL if blocked == HALTED else plan.reason
    for (row, position), state in zip(members, states, strict=True):
        if state is MemberState.UNSTARTED:
            _filter(session, row, reason, detail)
        elif position is not None and row.status == "selected":
            _settle(session, row, position, state)
    late = _expire_received(session, wave.id, "arrived after its wave was selected")
    counts = Counter(str(s) for s in states)
    stats = {
        **(wave.stats or {}),
        "progress": dict(counts),
        "opened": counts.get(MemberState.OPENED, 0),
        "failed": counts.get(MemberState.FAILED, 0),
        "skipped": counts.get(MemberState.SKIPPED, 0),
        "not_needed": counts.get(MemberState.UNSTARTED, 0),
        "late": late,
    }
    wave.status, wave.processed_at, wave.progress_at, wave.stats = "completed", now, now, stats
    selection = stats.get("selection", {})
    record(
        session,
        EventType.WAVE_COMPLETED,
        exchange=wave.exchange,
        wave_id=wave.id,
        target=selection.get("target", 0),
        candidates=len(members),
        signals=stats.get("signals", 0),
        opened=stats["opened"],
        failed=stats["failed"],
        skipped=stats["skipped"],
        not_needed=stats["not_needed"],
        filtered=stats.get("filtered", {}),
        late=late,
        reason=plan.reason,
        seconds=(now - wave.claimed_at).total_seconds() if wave.claimed_at else None,
    )


def _settle(session: Session, row: Signal, position: Position, state: MemberState) -> None:
    """A finished candidate whose opening left the signal without an outcome (e.g. an open
    that ended on an emergency stop) gets it from its position."""
    opened = state is MemberState.OPENED
    row.status = "opened" if opened else "failed"
    row.outcome_reason = None if opened else f"position {position.status}"
    record(
        session,
        EventType.SIGNAL_EXECUTED if opened else EventType.SIGNAL_FAILED,
        severity=Severity.INFO if opened else Severity.WARNING,
        ctx=signal_context(row),
        position_id=position.id,
        signal_id=row.signal_id,
        reason=row.outcome_reason,
    )


# --- resume, expiry, dispatch ---------------------------------------------------------------


def resume_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Pick a stalled wave up again: relaunch lost openings, then advance."""
    now = deps.clock.now()
    stall = timedelta(seconds=deps.settings.wave_stall_seconds)
    with unit_of_work() as session:
        wave = session.get(Wave, wave_id, with_for_update=True, populate_existing=True)
        if wave is None or wave.status != "processing" or _last_progress(wave) > now - stall:
            return WaveReport(wave_id, WaveOutcome.DUPLICATE)
        wave.attempts += 1
        if wave.attempts > deps.settings.task_max_attempts:
            _give_up(session, wave, now)
            return WaveReport(wave_id, WaveOutcome.GAVE_UP, completed=True)
        members, _ = _members(session, wave)
        # created but never picked up by a worker: the launch was lost with its sender
        lost = [
            p.id
            for _, p in members
            if p is not None and p.status == PositionStatus.PENDING_ENTRY and p.attempts == 0
        ]
        wave.progress_at = now
        record(
            session,
            EventType.WAVE_RESUMED,
            severity=Severity.WARNING,
            exchange=wave.exchange,
            wave_id=wave_id,
            attempt=wave.attempts,
            idle_seconds=(now - _last_progress(wave)).total_seconds(),
            relaunched=lost,
        )
    for position_id in lost:
        launch(position_id)
    report = advance_wave(deps, wave_id, launch)
    report.outcome = WaveOutcome.RESUMED
    report.launched = lost + report.launched
    return report


def _give_up(session: Session, wave: Wave, now: datetime) -> None:
    members, _ = _members(session, wave)
    for row, position in members:
        if position is None and row.status == "selected":
            row.status, row.outcome_reason = "failed", "wave processing gave up"
            record(
                session,
                EventType.SIGNAL_FAILED,
                severity=Severity.WARNING,
                ctx=signal_context(row),
                signal_id=row.signal_id,
                reason=row.outcome_reason,
            )
    late = _expire_received(session, wave.id, "its wave gave up")
    wave.status, wave.processed_at = "completed", now
    wave.stats = {**(wave.stats or {}), "gave_up": True, "late": late}
    record(
        session,
        EventType.TASK_GAVE_UP,
        severity=Severity.ERROR,
        exchange=wave.exchange,
        wave_id=wave.id,
        attempts=wave.attempts,
        reason="wave resumed too often; openings in flight are left to recovery",
    )
    record(
        session,
        EventType.WAVE_COMPLETED,
        severity=Severity.WARNING,
        exchange=wave.exchange,
        wave_id=wave.id,
        gave_up=True,
    )


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
        count = _expire_received(session, wid, "its wave was not processed in time")
        record(
            session,
            EventType.WAVE_EXPIRED,
            severity=Severity.WARNING,
            exchange=exchange,
            wave_id=wid,
            deadline=deadline,
            signals=count,
            max_delay_seconds=max_delay,
        )
    return [wid for wid, _, _ in expired]


def _expire_received(session: Session, wave_id: int, reason: str) -> int:
    rows = session.scalars(
        select(Signal).where(Signal.wave_id == wave_id, Signal.status == "received")
    ).all()
    for row in rows:
        row.status, row.outcome_reason = "expired", reason
        record(
            session,
            EventType.SIGNAL_EXPIRED,
            severity=Severity.WARNING,
            ctx=signal_context(row),
            signal_id=row.signal_id,
            wave_id=wave_id,
            reason=reason,
        )
    return len(rows)


@dataclass(frozen=True)
class DueWaves:
    due: list[int]  # open, deadline passed
    next_deadline: datetime | None  # of the earliest open wave not due yet


def due_waves(exchange: str, now: datetime) -> DueWaves:
    """Open waves of ``exchange`` whose deadline has passed, and the next deadline."""
    with unit_of_work() as session:
        due = list(
            session.scalars(
                select(Wave.id)
                .where(Wave.exchange == exchange, Wave.status == "open", Wave.deadline <= now)
                .order_by(Wave.deadline)
            )
        )
        upcoming = session.scalar(
            select(func.min(Wave.deadline)).where(
                Wave.exchange == exchange, Wave.status == "open", Wave.deadline > now
            )
        )
    return DueWaves(due, upcoming)


def wave_exists(exchange: str, window_start: datetime) -> bool:
    with unit_of_work() as session:
        found = session.scalar(
            select(Wave.id).where(Wave.exchange == exchange, Wave.window_start == window_start)
        )
    return found is not None


def record_wave_not_found(exchange: str, window_start: datetime, window_end: datetime) -> None:
    """A window closed without a single signal: the signal service may be silent."""
    with unit_of_work() as session:
        record(
            session,
            EventType.WAVE_NOT_FOUND,
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
    with unit_of_work() as session:
        report.expired = expire_waves(session, now, deps.settings.wave_max_delay)
        report.dispatched = list(
            session.scalars(
                select(Wave.id)
                .where(
                    Wave.exchange == deps.exchange_name,
                    Wave.status == "open",
                    Wave.deadline <= now,
                )
                .order_by(Wave.deadline)
            )
        )
        report.stalled = list(
            session.scalars(
                select(Wave.id)
                .where(
                    Wave.exchange == deps.exchange_name,
                    Wave.status == "processing",
                    func.coalesce(Wave.progress_at, Wave.claimed_at) <= stall_before,
                )
                .order_by(Wave.id)
            )
        )
    for wave_id in report.dispatched + report.stalled:
        enqueue(wave_id)
    return report


# --- helpers --------------------------------------------------------------------------------


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


def signal_context(row: Signal) -> EventContext:
    return EventContext(exchange=row.exchange, symbol=row.symbol, correlation_id=row.correlation_id)


def _filter(session: Session, row: Signal, reason: str, detail: str) -> None:
    row.status, row.outcome_reason = "filtered", f"{reason}: {detail}"
    record(
        session,
        EventType.SIGNAL_FILTERED,
        ctx=signal_context(row),
        signal_id=row.signal_id,
        wave_id=row.wave_id,
        reason=reason,
        detail=detail,
    )


def _last_progress(wave: Wave) -> datetime:
    moment = wave.progress_at or wave.claimed_at or wave.created_at
    assert moment is not None
    return moment
