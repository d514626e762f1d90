"""A wave member whose opening finished without giving its signal an outcome gets it from its
position, with the same event an opening writes (``record_signal_outcome``)."""

from __future__ import annotations

from typing import Any

import pytest

from core.db.models import Event, Position, Signal
from core.domain.wave_progress import MemberState
from core.events import EventType
from core.services.waves import _settle


class OneSignalSession:
    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.added: list[Any] = []

    def get(self, model: type, key: int) -> Signal | None:
        return self.signal if model is Signal and key == self.signal.id else None

    def add(self, row: Any) -> None:
        self.added.append(row)


def member() -> tuple[Signal, Position]:
    signal = Signal(id=5, signal_id="sig-5", status="selected", correlation_id="corr-5")
    position = Position(
        id=9,
        exchange="binance",
        symbol="BTCUSDT",
        status="closed",
        signal_id=5,
        correlation_id="corr-5",
    )
    return signal, position


@pytest.mark.parametrize(
    ("state", "status", "reason", "event_type", "severity"),
    [
        (MemberState.OPENED, "opened", None, EventType.SIGNAL_EXECUTED, "info"),
        (MemberState.FAILED, "failed", "position closed", EventType.SIGNAL_FAILED, "warning"),
    ],
)
def test_the_signal_takes_its_outcome_from_its_position(
    state: MemberState, status: str, reason: str | None, event_type: EventType, severity: str
) -> None:
    signal, position = member()
    session = OneSignalSession(signal)
    _settle(session, position, state)  # type: ignore[arg-type]
    assert (signal.status, signal.outcome_reason) == (status, reason)
    [event] = session.added
    assert isinstance(event, Event)
    assert (event.type, event.severity) == (event_type, severity)
    assert (event.position_id, event.correlation_id, event.symbol) == (9, "corr-5", "BTCUSDT")
    assert event.data == {"signal_id": "sig-5", "reason": reason}
