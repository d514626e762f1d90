"""The sweep's batch question: a decision at the latest price would change nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core.domain.sides import Side
from core.domain.trailing import (
    PriceWindow,
    TrailingParams,
    band,
    decide,
    new_trailing_state,
)
from core.domain.trailing_sweep import unchanged_at

D = Decimal
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)
PARAMS = TrailingParams(min_step_pct=D("0.1"), min_update_interval=timedelta(0))
TICK = D("0.01")
STATE = new_trailing_state(Side.LONG, D(100), D(1), T0, D(98), PARAMS)
PUBLISHED = band(STATE, PARAMS, NOW, TICK)


def test_a_price_inside_the_published_band_changes_nothing() -> None:
    assert unchanged_at(STATE, D(100), NOW, PARAMS, TICK, PUBLISHED)


def test_reaching_the_activation_changes_something() -> None:
    assert not unchanged_at(STATE, D("101.5"), NOW, PARAMS, TICK, PUBLISHED)


def test_a_missing_or_different_published_band_needs_a_run() -> None:
    assert not unchanged_at(STATE, D(100), NOW, PARAMS, TICK, None)
    wider = replace(PUBLISHED, high=D(200))
    assert not unchanged_at(STATE, D(100), NOW, PARAMS, TICK, wider)


def test_a_pending_deferred_move_needs_a_run() -> None:
    deferred = replace(STATE, pending_stop=D("99"))
    assert not unchanged_at(deferred, D(100), NOW, PARAMS, TICK, band(deferred, PARAMS, NOW, TICK))


@given(st.decimals(min_value=D(50), max_value=D(150), places=2))
def test_unchanged_only_when_the_decision_is_a_no_op(price: Decimal) -> None:
    decision = decide(STATE, PriceWindow.at(price), NOW, PARAMS, TICK)
    if unchanged_at(STATE, price, NOW, PARAMS, TICK, PUBLISHED):
        assert not decision.send and not decision.events and decision.state == STATE
