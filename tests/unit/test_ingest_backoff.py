"""Reconnect backoff: grows to its ceiling, jittered within the bound, never hot, resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from core.domain.signals import Action, Exchange, Signal
from core.domain.waves import WaveParams, wave_key
from core.ingest.backoff import Backoff
from core.ingest.wave_dispatch import window_start


def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


def test_bound_doubles_up_to_the_ceiling():
    backoff = Backoff(0.5, 4.0, draw=highest)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_never_goes_below_half_the_first_wait():
    backoff = Backoff(0.5, 30.0, draw=lowest)
    assert all(backoff.next() == 0.25 for _ in range(10))


def test_reset_starts_over():
    backoff = Backoff(1.0, 8.0, draw=highest)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 1.0


def test_a_long_outage_does_not_overflow():
    backoff = Backoff(0.5, 30.0, draw=highest, attempts=10_000)
    assert backoff.next() == 30.0


def test_nonsense_bounds_are_refused():
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


def test_dispatcher_windows_are_the_waves_windows():
    """The dispatcher's silent-window check must look for the very rows the store creates."""
    for seconds in (7, 60, 900):
        params = WaveParams(window=timedelta(seconds=seconds))
        for at in (
            datetime(2026, 11, 23, 12, 7, 31, 500, tzinfo=UTC),
            datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        ):
            signal = Signal("a", "BTCUSDT", Exchange.BINANCE, Action.BUY, D(1), D(1), at)
            assert window_start(at, params.window) == wave_key(signal, params).start
    quarter = datetime(2026, 11, 23, 12, 7, 31, tzinfo=UTC)
    assert window_start(quarter, timedelta(minutes=15)) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
