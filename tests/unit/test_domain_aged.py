"""Aged positions: every phase boundary for long and short, targets, band, monotonicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.aged import (
    AgedCloseReason,
    AgedParams,
    AgedPhase,
    AgedPosition,
    accepted_loss_pct,
    band,
    breakeven_target,
    emergency_at,
    evaluate,
    phase_at,
)
from core.domain.sides import Side

D = Decimal
P = AgedParams()
OPEN = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
LONG = AgedPosition(Side.LONG, D(100), OPEN)
SHORT = AgedPosition(Side.SHORT, D(100), OPEN)


def h(hours: float) -> datetime:
    return OPEN + timedelta(hours=hours)


@pytest.mark.parametrize(
    ("when", "phase", "loss"),
    [
        (h(0), AgedPhase.NOT_AGED, D(0)),
        (h(3), AgedPhase.NOT_AGED, D(0)),  # exactly at max_age: not yet older than it
        (h(3) + US, AgedPhase.GRACE, D(0)),
        (h(11), AgedPhase.GRACE, D(0)),  # exactly 8 h after becoming aged: still grace
        (h(11) + US, AgedPhase.PROGRESSIVE, None),
        (h(12), AgedPhase.PROGRESSIVE, D("0.5")),
        (h(21), AgedPhase.PROGRESSIVE, D("5.0")),  # exactly 10 h after grace: not accelerated
        (h(21) + timedelta(seconds=36), AgedPhase.PROGRESSIVE, D("6.006")),  # 10.01 h * 0.5 * 1.2
        (h(11) + timedelta(hours=16, minutes=40), AgedPhase.PROGRESSIVE, D("10.0")),  # at the cap
        (h(11) + timedelta(hours=16, minutes=40) + US, AgedPhase.EMERGENCY, None),
        (h(40), AgedPhase.EMERGENCY, None),
    ],
)
def test_phase_boundaries(when: datetime, phase: AgedPhase, loss: Decimal | None) -> None:
    for pos in (LONG, SHORT):
        got_phase, got_loss = phase_at(pos, when, P)
        assert got_phase is phase
        if loss is not None:
            assert got_loss == loss


def test_acceleration_multiplies_the_whole_accumulated_loss_as_in_seed() -> None:
    assert accepted_loss_pct(D(10), P) == D("5.0")
    assert accepted_loss_pct(D("10.000001"), P) == D("10.000001") * D("0.5") * D("1.2")
    assert accepted_loss_pct(D(0), P) == 0
    assert accepted_loss_pct(D(-1), P) == 0


@pytest.mark.parametrize(
    ("pos", "expected"),
    [(LONG, D("100.100")), (SHORT, D("99.900"))],
)
def test_grace_target_is_breakeven_plus_two_commissions(
    pos: AgedPosition, expected: Decimal
) -> None:
    d = evaluate(pos, AgedPhase.NOT_AGED, D(99) if pos is LONG else D(101), h(5), P)
    assert d.phase is AgedPhase.GRACE and d.target_price == expected
    assert breakeven_target(pos, P) == expected
    assert not d.close_now


@pytest.mark.parametrize(
    ("pos", "expected"),
    [(LONG, D("99.5")), (SHORT, D("100.5"))],
)
def test_progressive_target_is_entry_minus_accepted_loss(
    pos: AgedPosition, expected: Decimal
) -> None:
    d = evaluate(pos, AgedPhase.GRACE, None, h(12), P)
    assert d.phase is AgedPhase.PROGRESSIVE and d.target_price == expected


def test_long_closes_when_mark_reaches_target_exactly_and_not_a_hair_before() -> None:
    assert evaluate(LONG, AgedPhase.PROGRESSIVE, D("99.5"), h(12), P).close_reason is (
        AgedCloseReason.TARGET_REACHED
    )
    assert not evaluate(LONG, AgedPhase.PROGRESSIVE, D("99.4999"), h(12), P).close_now


def test_short_closes_when_mark_reaches_target_exactly_and_not_a_hair_before() -> None:
    assert evaluate(SHORT, AgedPhase.PROGRESSIVE, D("100.5"), h(12), P).close_now
    assert not evaluate(SHORT, AgedPhase.PROGRESSIVE, D("100.5001"), h(12), P).close_now


def test_in_profit_net_of_fees_closes_now_in_any_aged_phase() -> None:
    d = evaluate(LONG, AgedPhase.GRACE, D("100.1"), h(4), P)
    assert d.close_now and d.close_reason is AgedCloseReason.PROFIT
    d2 = evaluate(SHORT, AgedPhase.PROGRESSIVE, D(90), h(15), P)
    assert d2.close_reason is AgedCloseReason.PROFIT


def test_gross_profit_below_fees_in_grace_waits_for_the_target() -> None:
    assert not evaluate(LONG, AgedPhase.GRACE, D("100.05"), h(4), P).close_now


def test_not_aged_position_never_closes_even_in_profit() -> None:
    d = evaluate(LONG, None, D(150), h(2), P)
    assert d.phase is AgedPhase.NOT_AGED and not d.close_now and d.transition is None


def test_active_trailing_stop_means_not_aged() -> None:
    pos = AgedPosition(Side.LONG, D(100), OPEN, trailing_active=True)
    d = evaluate(pos, AgedPhase.GRACE, D(100), h(30), P)
    assert d.phase is AgedPhase.NOT_AGED and not d.close_now
    assert d.transition is not None and d.transition.to_phase is AgedPhase.NOT_AGED


def test_emergency_closes_at_market_without_a_price() -> None:
    d = evaluate(LONG, AgedPhase.PROGRESSIVE, None, h(30), P)
    assert d.phase is AgedPhase.EMERGENCY and d.close_now and d.target_price is None
    assert d.close_reason is AgedCloseReason.MAX_LOSS_EXCEEDED


def test_transition_reported_only_when_phase_changes() -> None:
    d = evaluate(LONG, AgedPhase.GRACE, D(99), h(12), P)
    assert d.transition is not None
    assert (d.transition.from_phase, d.transition.to_phase) == (
        AgedPhase.GRACE,
        AgedPhase.PROGRESSIVE,
    )
    assert evaluate(LONG, AgedPhase.PROGRESSIVE, D(99), h(13), P).transition is None
    first = evaluate(LONG, None, D(99), h(4), P)
    assert first.transition is not None and first.transition.from_phase is AgedPhase.NOT_AGED


def test_emergency_instant_with_defaults_is_27h40m_after_open_plus_one_microsecond() -> None:
    assert emergency_at(LONG, P) == h(11) + timedelta(hours=16, minutes=40) + US
    assert phase_at(LONG, emergency_at(LONG, P) - US, P)[0] is AgedPhase.PROGRESSIVE
    assert phase_at(LONG, emergency_at(LONG, P), P)[0] is AgedPhase.EMERGENCY


def test_emergency_when_cap_is_reached_before_acceleration() -> None:
    params = AgedParams(max_loss_pct=D(4))  # 8 h at 0.5 %/h, before the 10 h acceleration
    assert emergency_at(LONG, params) == h(19) + US
    assert phase_at(LONG, h(19), params)[0] is AgedPhase.PROGRESSIVE


def test_emergency_right_after_acceleration_when_the_jump_crosses_the_cap() -> None:
    params = AgedParams(max_loss_pct=D("5.5"))  # 5 % at 10 h, 6 % just after
    assert emergency_at(LONG, params) == h(21) + US
    assert phase_at(LONG, h(21) + US, params)[0] is AgedPhase.EMERGENCY


def test_band_long_is_below_the_target_at_the_end_of_the_horizon() -> None:
    b = band(LONG, h(12), P, timedelta(minutes=10))
    assert b.low is None and b.valid_until == h(12) + timedelta(minutes=10)
    _, loss = phase_at(LONG, h(12) + timedelta(minutes=10) - US, P)
    assert b.high == D(100) * (1 - loss / 100)


def test_band_short_is_above_the_target() -> None:
    b = band(SHORT, h(5), P, timedelta(minutes=10))
    assert b.high is None and b.low == D("99.900")


def test_band_before_aged_is_unbounded_until_horizon_and_empty_in_emergency() -> None:
    assert band(LONG, h(1), P, timedelta(minutes=10)).high is None
    assert band(LONG, h(30), P, timedelta(minutes=10)).is_empty
    near = band(LONG, emergency_at(LONG, P) - timedelta(minutes=1), P, timedelta(hours=1))
    assert near.valid_until == emergency_at(LONG, P)


def test_invalid_params_rejected() -> None:
    with pytest.raises(ValueError, match="acceleration_factor"):
        AgedParams(acceleration_factor=D("0.9"))
    with pytest.raises(ValueError, match="max_loss_pct"):
        AgedParams(max_loss_pct=D(0))


def test_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        phase_at(LONG, datetime(2026, 1, 1), P)  # noqa: DTZ001


# ---------------------------------------------------------------- properties

offsets = st.integers(min_value=0, max_value=60 * 3600 * 1000)  # ms over 60 h
params_st = st.builds(
    AgedParams,
    max_age=st.integers(0, 6).map(lambda x: timedelta(hours=x)),
    grace_period=st.integers(0, 12).map(lambda x: timedelta(hours=x)),
    loss_step_pct_per_hour=st.decimals(min_value=D("0.1"), max_value=D(2), places=2),
    acceleration_factor=st.decimals(min_value=D(1), max_value=D(2), places=2),
    acceleration_after=st.integers(0, 15).map(lambda x: timedelta(hours=x)),
    max_loss_pct=st.decimals(min_value=D(1), max_value=D(20), places=1),
)


@given(st.sampled_from([LONG, SHORT]), offsets, offsets, params_st)
@settings(max_examples=300)
def test_property_loss_phase_and_target_are_monotone_in_time(
    pos: AgedPosition, a: int, b: int, params: AgedParams
) -> None:
    t1, t2 = sorted((OPEN + timedelta(milliseconds=a), OPEN + timedelta(milliseconds=b)))
    d1 = evaluate(pos, None, None, t1, params)
    d2 = evaluate(pos, None, None, t2, params)
    assert d1.accepted_loss_pct <= d2.accepted_loss_pct
    assert d1.phase.rank <= d2.phase.rank
    if d1.target_price is not None and d2.target_price is not None:
        if pos.side is Side.LONG:
            assert d2.target_price <= d1.target_price
        else:
            assert d2.target_price >= d1.target_price
    if d2.target_price is not None:
        # never worse than the cap
        assert d2.accepted_loss_pct <= params.max_loss_pct


@given(
    st.sampled_from([LONG, SHORT]),
    offsets,
    st.integers(1, 3 * 3600),
    st.decimals(min_value=D(50), max_value=D(150), places=3),
    st.integers(0, 1000),
)
@settings(max_examples=300)
def test_property_no_close_for_prices_inside_the_band_during_its_horizon(
    pos: AgedPosition, a: int, horizon_s: int, price: Decimal, later_permille: int
) -> None:
    now = OPEN + timedelta(milliseconds=a)
    horizon = timedelta(seconds=horizon_s)
    b = band(pos, now, P, horizon)
    if b.valid_until is None or not b.contains(price):
        return
    when = now + (b.valid_until - now) * later_permille / 1001
    assert not evaluate(pos, None, price, when, P).close_now
