"""Time, injected: services take a clock so tests and the simulator can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


SYSTEM_CLOCK = SystemClock()


def redis_now(client: Any) -> float:
    """Redis's clock (epoch s, ``TIME``): the one shared by every host that talks to it, for
    times written on one host and read on another (the workers' loop beats)."""
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6
