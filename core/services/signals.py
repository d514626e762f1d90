"""Storing signals: durable first, deduplicated by id, each assigned to its wave.

Why everything of a frame in one transaction, before anything else happens: the ingest
acknowledges nothing to the signal service, so the only way not to lose a signal is to not
read the next frame until this one is committed. One frame is one commit: its signals, the
wave rows they open, and the events saying so (received, duplicate, rejected) exist
together or not at all.

Deduplication is the database's job (unique ``signal_id``, ``ON CONFLICT DO NOTHING``), so
two ingest processes, a resend after a reconnect, or a replayed frame all end in one row
and a ``SIGNAL_DUPLICATE`` event, never an error.

A signal whose wave is already being processed (or done, or expired) cannot join it any
more: it is stored as ``expired`` with the reason, so every stored signal still has an
outcome. The wave row is read ``FOR SHARE``, which waits for a wave claim in progress
(core/services/waves.py claims with an UPDATE), so a signal is either in the claimed wave's
selection or marked late, never silently in between.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Signal, Wave
from core.db.session import unit_of_work
from core.domain.signals import ParseResult, Rejection, SignalParams
from core.domain.signals import Signal as ParsedSignal
from core.domain.waves import WaveKey, WaveParams, is_late, wave_deadline, wave_key
from core.events import EventContext, EventType, Severity, record
from core.services.deps import UnitOfWork
from core.services.signal_outcomes import set_outcome, signal_context
from core.venues import configured_venues


@dataclass(frozen=True, slots=True)
class StoredSignal:
    row_id: int
    signal_id: str
    exchange: str
    correlation_id: str
    wave_id: int
    status: str  # "received", or "expired" when its wave no longer takes signals


@dataclass
class FrameReport:
    """What one frame left in the database."""

    stored: list[StoredSignal] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: int = 0
    new_waves: list[tuple[str, int]] = field(default_factory=list)  # (exchange, wave id)


def signal_params(settings: Settings) -> SignalParams:
    return SignalParams(
        max_frame_bytes=settings.signal_max_frame_bytes,
        reject_unknown_fields=settings.signal_reject_unknown_fields,
        score_min=settings.signal_score_min,
        score_max=settings.signal_score_max,
        venues=frozenset(configured_venues(settings)),
    )


def store_frame(
    result: ParseResult,
    *,
    now: datetime,
    params: WaveParams,
    ingest: str | None = None,
    uow: UnitOfWork = unit_of_work,
) -> FrameReport:
    """Commit a parsed frame: rejections as events, valid signals as rows in their waves.

    ``now`` is when the frame arrived (stored as ``received_at`` even if the commit had to
    wait for the database). ``ingest`` names the receiving process in the events.
    """
    report = FrameReport()
    with uow() as session:
        for rejection in result.rejections:
            _record_rejection(session, rejection, ingest)
            report.rejected += 1
        for parsed in result.signals:
            stored = _store_signal(session, parsed, now, params, report, ingest)
            if stored is not None:
                report.stored.append(stored)
    return report


def _record_rejection(session: Session, rejection: Rejection, ingest: str | None) -> None:
    record(session, EventType.SIGNAL_REJECTED, ingest=ingest, **asdict(rejection))


def _store_signal(
    session: Session,
    parsed: ParsedSignal,
    now: datetime,
    params: WaveParams,
    report: FrameReport,
    ingest: str | None,
) -> StoredSignal | None:
    exchange = parsed.exchange.value
    correlation_id = uuid.uuid4().hex
    row_id = _insert_signal(session, parsed, now, correlation_id)
    if row_id is None:
        _record_duplicate(session, parsed, ingest)
        report.duplicates.append(parsed.id)
        return None

    key = wave_key(parsed, params)
    wave_id, wave_status, created = _join_wave(
        session, exchange, key.start, key.start + params.window, wave_deadline(key, params)
    )
    ctx = EventContext(exchange=exchange, symbol=parsed.symbol, correlation_id=correlation_id)
    if created:
        report.new_waves.append((exchange, wave_id))
        _record_new_wave(session, exchange, wave_id, key, params, parsed.id)
    row = session.get(Signal, row_id)
    assert row is not None
    row.wave_id = wave_id
    record(
        session,
        EventType.SIGNAL_RECEIVED,
        ctx=ctx,
        signal_id=parsed.id,
        **_content(parsed),
        wave_id=wave_id,
        late=is_late(parsed, now, params),
        ignored_fields=list(parsed.ignored_fields),
        ingest=ingest,
    )
    if wave_status != "open":
        why = f"arrived after its wave was {wave_status}"
        set_outcome(session, row, "expired", why, wave_id=wave_id, reason=why)
    return StoredSignal(row_id, parsed.id, exchange, correlation_id, wave_id, row.status)


def _record_new_wave(
    session: Session, exchange: str, wave_id: int, key: WaveKey, params: WaveParams, first: str
) -> None:
    record(
        session,
        EventType.WAVE_DETECTED,
        ctx=EventContext(exchange=exchange),
        wave_id=wave_id,
        window_start=key.start,
        deadline=wave_deadline(key, params),
        first_signal_id=first,
    )


def _insert_signal(
    session: Session, parsed: ParsedSignal, now: datetime, correlation_id: str
) -> int | None:
    """The signal's row; None when its id is stored already (the unique index decides)."""
    row_id: int | None = session.execute(
        insert(Signal)
        .values(
            signal_id=parsed.id,
            **_content(parsed),
            received_at=now,
            status="received",
            correlation_id=correlation_id,
            raw=_raw(parsed),
        )
        .on_conflict_do_nothing(index_elements=[Signal.signal_id])
        .returning(Signal.id)
    ).scalar_one_or_none()
    return row_id


def _join_wave(
    session: Session, exchange: str, start: datetime, end: datetime, deadline: datetime
) -> tuple[int, str, bool]:
    """The wave of (exchange, window start): created here (first signal) or found.

    A found wave is read FOR SHARE: the lock waits for a claim in progress and keeps the
    wave from being claimed until this frame commits.
    """
    created = session.execute(
        insert(Wave)
        .values(
            exchange=exchange, window_start=start, window_end=end, deadline=deadline, status="open"
        )
        .on_conflict_do_nothing(constraint="uq_waves_exchange_window")
        .returning(Wave.id)
    ).scalar_one_or_none()
    if created is not None:
        return created, "open", True
    wave_id, status = session.execute(
        select(Wave.id, Wave.status)
        .where(Wave.exchange == exchange, Wave.window_start == start)
        .with_for_update(read=True)
    ).one()
    return wave_id, status, False


def _record_duplicate(session: Session, parsed: ParsedSignal, ingest: str | None) -> None:
    first = session.scalars(select(Signal).where(Signal.signal_id == parsed.id)).one()
    differs = any(getattr(first, column) != value for column, value in _content(parsed).items())
    record(
        session,
        # a resend of the same signal is routine; the same id with other content is a
        # producer bug worth a look
        EventType.SIGNAL_DUPLICATE,
        severity=Severity.WARNING if differs else Severity.INFO,
        ctx=signal_context(first),
        signal_id=parsed.id,
        first_received_at=first.received_at,
        first_status=first.status,
        content_differs=differs,
        ingest=ingest,
    )


def _content(parsed: ParsedSignal) -> dict[str, Any]:
    """What a signal says, as the columns of its row: stored from the first copy, compared
    with every later copy of the same id (a copy that differs is a producer bug)."""
    return {
        "exchange": parsed.exchange.value,
        "symbol": parsed.symbol,
        "action": parsed.action.value,
        "score_week": parsed.score_week,
        "score_month": parsed.score_month,
        "signal_ts": parsed.timestamp,
    }


def _raw(parsed: ParsedSignal) -> dict[str, Any]:
    """The validated signal as stored (scores as exact strings), plus ignored field names."""
    raw: dict[str, Any] = {
        "id": parsed.id,
        "symbol": parsed.symbol,
        "exchange": parsed.exchange.value,
        "action": parsed.action.value,
        "score_week": _dec(parsed.score_week),
        "score_month": _dec(parsed.score_month),
        "timestamp": parsed.timestamp.isoformat(),
    }
    if parsed.ignored_fields:
        raw["ignored_fields"] = list(parsed.ignored_fields)
    return raw


def _dec(value: Decimal) -> str:
    return format(value, "f")
