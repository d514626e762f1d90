"""What stops an opening before its entry is sent: a halt, or paused openings.

A halt (core/services/halts.py) that comes between a wave's start of an opening and its entry
files the signal as the wave's other candidates are filed (``filtered``, reason ``halted``);
an exchange that refuses an entry for want of funds pauses every opening on that venue for
``VIGIL_OPENINGS_PAUSE_SECONDS`` (a key in Redis that the waves read too).
"""

from __future__ import annotations

import redis
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, Signal
from core.domain.positions import PositionTrigger
from core.events import EventType, record
from core.services.positions import context, transition
from core.services.signal_outcomes import filter_signal


def paused_key(exchange: str) -> str:
    return f"vigil:openings_paused:{exchange}"


def filter_halted(session: Session, position: Position, token: int) -> None:
    """Nothing was sent: the opening fails and its signal is filtered ``halted``."""
    detail = "openings halted before the entry was sent"
    transition(session, position, PositionTrigger.ENTRY_REJECTED, token, reason=f"halted: {detail}")
    signal = session.get(Signal, position.signal_id) if position.signal_id else None
    if signal is not None:
        filter_signal(session, signal, "halted", detail, ctx=context(position))


def pause_openings(
    client: redis.Redis, settings: Settings, session: Session, position: Position, why: str
) -> None:
    """Insufficient funds: no opening on this venue for ``openings_pause_seconds``."""
    seconds = settings.openings_pause_seconds
    client.set(paused_key(position.exchange), why[:200], ex=seconds)
    record(
        session,
        EventType.INSUFFICIENT_FUNDS,
        ctx=context(position),
        error=why,
    )
    record(
        session,
        EventType.OPENINGS_PAUSED,
        ctx=context(position),
        seconds=seconds,
    )
