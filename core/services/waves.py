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
   are filtered (``wave_target_reached`` / ``openings_paused`` / ``halted``), every signal
   of the wave has its outcome, counts go into ``WAVE_COMPLETED``.

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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.models import Position, Signal, Wave
from core.domain.positions import INTERMEDIATE, PositionStatus
from core.domain.signals import Action
from core.domain.wave_progress import LaunchPlan, MemberState, plan_launches
from core.domain.waves import (
    FilterReason,
    OpenPositionInfo,
    WaveContext,
    WaveParams,
    WaveSelection,
    select_wave,
)
from core.events import EventType, Severity, jsonable_fields, record
from core.services import symbol_settings
from core.services.deps import Deps
from core.services.positions import NewPosition, create_position, record_signal_outcome
from core.services.signal_outcomes import filter_signal, set_outcome
from core.services.wave_upkeep import (
    HALTED,
    HALTED_DETAIL,
    DispatchReport,
    DueWaves,
    about,
    all_halted,
    balance_unless_halted,
    dispatch_due_waves,
    domain_signal,
    due_waves,
    expire_received,
    expire_waves,
    give_up,
    last_progress,
    open_position_infos,
    opening_blocked,
    record_wave_not_found,
    stalled,
    wave_exists,
    wave_members,
    wave_params,
)

__all__ = [
    "wave_params",
    "DispatchReport",
    "DueWaves",
    "dispatch_due_waves",
    "due_waves",
    "expire_waves",
    "record_wave_not_found",
    "wave_exists",
]

log = logging.getLogger(__name__)

Launch = Callable[[int], None]
"""Start the opening of one position (by id); called after the position is committed."""

TARGET_REACHED = "wave_target_reached"
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
        return jsonable_fields(self)


# --- process_wave: claim, select, or recognise a duplicate ------------------------------------


def process_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Process the wave once, whoever else is delivered the same wave (see module doc)."""
    now = deps.clock.now()
    with deps.unit_of_work() as session:
        wave = session.get(Wave, wave_id)
        if wave is None:
            record(
                session,
                EventType.WAVE_NOT_FOUND,
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
            with deps.unit_of_work() as session:
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
    with deps.unit_of_work() as session:
        wave = session.get(Wave, wave_id)
        assert wave is not None
        resumable = stalled(wave, now, deps.settings)
        if not resumable:
            record(
                session,
                EventType.WAVE_DUPLICATE_DETECTED,
                **about(wave),
                status=wave.status,
                claimed_at=wave.claimed_at,
            )
    if resumable:
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
    balance, halted = balance_unless_halted(deps)
    now = deps.clock.now()
    with deps.unit_of_work() as session:
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
        open_now = open_position_infos(session, wave.exchange, deps.settings)
        if halted:
            selection = all_halted(session, rows)
        else:
            selection = _select(deps, wave.exchange, rows, WaveContext(open_now, balance), params)
        by_id = {row.signal_id: row for row in rows}
        for filtered in selection.filtered:
            filter_signal(session, by_id[filtered.signal.id], str(filtered.reason), filtered.detail)
        candidates = [by_id[s.id] for s in selection.to_open]
        for rank, row in enumerate(candidates):
            set_outcome(
                session, row, "selected", None, wave_id=wave_id, rank=rank, target=selection.target
            )
        held_back = len(rows) if halted else 0
        _record_selection(
            session, wave, len(rows), candidates, selection, open_now, balance, params, held_back
        )
    return True


def _select(
    deps: Deps, exchange: str, rows: Sequence[Signal], context: WaveContext, params: WaveParams
) -> WaveSelection:
    """The domain's choice, with each symbol's own enabled/stoplisted setting applied."""
    stoplisted = symbol_settings.disabled_among(
        deps.settings, deps.redis, exchange, {row.symbol for row in rows}
    )
    return select_wave(
        [domain_signal(row) for row in rows], context, replace(params, stoplist=stoplisted)
    )


def _record_selection(
    session: Session,
    wave: Wave,
    signals: int,
    candidates: list[Signal],
    selection: WaveSelection,
    open_now: list[OpenPositionInfo],
    balance: Decimal,
    params: WaveParams,
    halted: int = 0,
) -> None:
    """The selection on the wave row (never recomputed) and its events; ``halted``: how
    many signals a halt held back."""
    reasons = Counter(str(f.reason) for f in selection.filtered)
    reasons.update({HALTED: halted} if halted else {})
    limited = {r: n for r, n in reasons.items() if r in RISK_LIMITS}
    if limited:  # one event per wave for the operator, beside each signal's own
        record(
            session,
            EventType.RISK_LIMITS_EXCEEDED,
            **about(wave),
            signals_held_back=limited,
            open_positions=len(open_now),
            max_open_positions=params.max_open_positions,
            max_exposure=params.max_exposure_quote,
            balance=balance,
        )
    wave.stats = {
        "selection": {"target": selection.target, "to_open": [row.id for row in candidates]},
        "signals": signals,
        "filtered": dict(reasons),
        "balance": str(balance),
        "open_positions": len(open_now),
    }
    record(
        session,
        EventType.WAVE_STARTED,
        **about(wave),
        window_start=wave.window_start,
        signals=signals,
        candidates=len(candidates),
        target=selection.target,
        filtered=dict(reasons),
        balance=balance,
        open_positions=len(open_now),
        attempt=wave.attempts,
    )


# --- advance: start what the plan says, complete when done ----------------------------------


def advance_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Move a wave in ``processing`` on: start candidates, or complete it. Idempotent."""
    now = deps.clock.now()
    launched: list[int] = []
    completed = False
    with deps.unit_of_work() as session:
        wave = session.get(Wave, wave_id, with_for_update=True, populate_existing=True)
        if wave is None or wave.status != "processing":
            return WaveReport(wave_id, WaveOutcome.ADVANCED)
        blocked = opening_blocked(deps, session, wave.exchange)
        paused = blocked is not None
        members, selection = wave_members(session, wave)
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
        filter_signal(session, row, ALREADY_OPEN, f"{row.symbol} got a position before this wave's")
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
            filter_signal(session, row, reason, detail)
        elif position is not None and row.status == "selected":
            _settle(session, position, state)
    late = expire_received(session, wave.id, "arrived after its wave was selected")
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
        severity=Severity.INFO,
        **about(wave),
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


def _settle(session: Session, position: Position, state: MemberState) -> None:
    """A finished candidate whose opening left the signal without an outcome (e.g. an open
    that ended on an emergency stop) gets it from its position."""
    if state is MemberState.OPENED:
        record_signal_outcome(session, position, "opened", None)
    else:
        record_signal_outcome(session, position, "failed", f"position {position.status}")


# --- resume, expiry, dispatch ---------------------------------------------------------------


def resume_wave(deps: Deps, wave_id: int, launch: Launch) -> WaveReport:
    """Pick a stalled wave up again: relaunch lost openings, then advance."""
    now = deps.clock.now()
    with deps.unit_of_work() as session:
        wave = session.get(Wave, wave_id, with_for_update=True, populate_existing=True)
        if wave is None or not stalled(wave, now, deps.settings):
            return WaveReport(wave_id, WaveOutcome.DUPLICATE)
        wave.attempts += 1
        if wave.attempts > deps.settings.task_max_attempts:
            give_up(session, wave, now)
            return WaveReport(wave_id, WaveOutcome.GAVE_UP, completed=True)
        members, _ = wave_members(session, wave)
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
            **about(wave),
            attempt=wave.attempts,
            idle_seconds=(now - last_progress(wave)).total_seconds(),
            relaunched=lost,
        )
    for position_id in lost:
        launch(position_id)
    report = advance_wave(deps, wave_id, launch)
    report.outcome = WaveOutcome.RESUMED
    report.launched = lost + report.launched
    return report
