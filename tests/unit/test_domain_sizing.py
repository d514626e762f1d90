"""Sizing and rounding: directions, limits, and exactness."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.sides import Side, price_against, price_in_favour
from core.domain.sizing import (
    MarketRules,
    Rounding,
    SizingReject,
    round_price,
    round_qty,
    round_stop_price,
    round_to_step,
    size_position,
    stop_price_for,
)

D = Decimal
BTC = MarketRules(
    tick_size=D("0.1"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("100"),
    min_notional=D(5),
)

prices = st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4)
steps = st.sampled_from([D("0.001"), D("0.01"), D("0.5"), D("1"), D("0.0025"), D("10")])


@pytest.mark.parametrize(
    ("value", "step", "rounding", "expected"),
    [
        (D("1.2349"), D("0.01"), Rounding.DOWN, D("1.23")),
        (D("1.2301"), D("0.01"), Rounding.UP, D("1.24")),
        (D("1.23"), D("0.01"), Rounding.UP, D("1.23")),
        (D("7.3"), D("0.5"), Rounding.DOWN, D("7.0")),
        (D("7.3"), D("0.5"), Rounding.UP, D("7.5")),
        (D("0.0049"), D("0.0025"), Rounding.DOWN, D("0.0025")),
    ],
)
def test_round_to_step_table(
    value: Decimal, step: Decimal, rounding: Rounding, expected: Decimal
) -> None:
    assert round_to_step(value, step, rounding) == expected


def test_round_to_step_rejects_non_positive_step() -> None:
    with pytest.raises(ValueError, match="positive"):
        round_to_step(D(1), D(0), Rounding.DOWN)


@given(value=prices, step=steps, rounding=st.sampled_from(list(Rounding)))
@settings(max_examples=200)
def test_rounding_lands_on_grid_within_one_step_in_its_direction(
    value: Decimal, step: Decimal, rounding: Rounding
) -> None:
    r = round_to_step(value, step, rounding)
    assert (r / step) == (r / step).to_integral_value()
    assert abs(r - value) < step
    assert (r <= value) if rounding is Rounding.DOWN else (r >= value)


def test_stop_rounds_away_from_price_long_down_short_up() -> None:
    assert round_stop_price(D("99.97"), D("0.1"), Side.LONG) == D("99.9")
    assert round_stop_price(D("100.03"), D("0.1"), Side.SHORT) == D("100.1")


@pytest.mark.parametrize(
    ("side", "expected"),
    [(Side.LONG, D("98.0")), (Side.SHORT, D("102.0"))],
)
def test_stop_price_for_entry_and_pct(side: Side, expected: Decimal) -> None:
    assert stop_price_for(D(100), D(2), side, D("0.1")) == expected


def test_stop_price_for_unrounded_is_exact() -> None:
    assert stop_price_for(D("123.45"), D("1.5"), Side.LONG) == D("123.45") * D("0.985")


@pytest.mark.parametrize("pct", [D(0), D(100), D(-1)])
def test_stop_price_for_rejects_out_of_range_pct(pct: Decimal) -> None:
    with pytest.raises(ValueError, match="invalid stop"):
        stop_price_for(D(100), pct, Side.LONG)


@given(entry=prices, pct=st.decimals(min_value=D("0.01"), max_value=D("50"), places=2), tick=steps)
@settings(max_examples=200)
def test_stop_is_always_on_the_loss_side_of_entry(
    entry: Decimal, pct: Decimal, tick: Decimal
) -> None:
    assert stop_price_for(entry, pct, Side.LONG, tick) < entry
    assert stop_price_for(entry, pct, Side.SHORT, tick) > entry


def test_size_rounds_quantity_down_to_step() -> None:
    result = size_position(D(100), D("30000"), BTC)
    assert result.ok and result.quantity == D("0.003")
    assert result.notional == D("90.000")
    assert result.margin == D("90.000")


def test_size_with_margin_and_leverage() -> None:
    result = size_position(D(10), D("30000"), BTC, D(10), quote_is_margin=True)
    assert result.quantity == D("0.003") and result.margin == D("9.0000")


def test_leverage_only_changes_margin_when_amount_is_notional() -> None:
    result = size_position(D(100), D("30000"), BTC, D(5))
    assert result.quantity == D("0.003") and result.margin == D("18.000")


@pytest.mark.parametrize(
    ("amount", "price", "reason"),
    [
        (D(0), D(1), SizingReject.INVALID_INPUT),
        (D(10), D(0), SizingReject.INVALID_INPUT),
        (D(10), D(-5), SizingReject.INVALID_INPUT),
        (D(20), D("30000"), SizingReject.ZERO_AFTER_ROUNDING),
        (D(5000000), D("30000"), SizingReject.ABOVE_MAX_QTY),
    ],
)
def test_size_rejects_with_typed_reason(
    amount: Decimal, price: Decimal, reason: SizingReject
) -> None:
    result = size_position(amount, price, BTC)
    assert result.reject is reason and result.quantity is None and not result.ok


def test_size_below_min_notional_is_rejected_not_rounded_up() -> None:
    rules = MarketRules(tick_size=D("0.01"), step_size=D(1), min_qty=D(1), min_notional=D(5))
    result = size_position(D("4.99"), D("1"), rules)
    assert result.reject is SizingReject.BELOW_MIN_NOTIONAL
    assert size_position(D(5), D(1), rules).quantity == D(5)


def test_size_below_min_qty_is_rejected() -> None:
    rules = MarketRules(tick_size=D("0.01"), step_size=D("0.1"), min_qty=D(1))
    assert size_position(D("0.95"), D(1), rules).reject is SizingReject.BELOW_MIN_QTY


def test_price_rounding_is_explicit() -> None:
    assert round_price(D("1.005"), D("0.01"), Rounding.UP) == D("1.01")
    assert round_price(D("1.005"), D("0.01"), Rounding.DOWN) == D("1.00")
    assert round_qty(D("0.0039"), BTC) == D("0.003")


@given(amount=st.decimals(min_value=D(1), max_value=D(1000000), places=2), price=prices, step=steps)
@settings(max_examples=200)
def test_sized_notional_never_exceeds_budget(
    amount: Decimal, price: Decimal, step: Decimal
) -> None:
    rules = MarketRules(tick_size=D("0.0001"), step_size=step)
    result = size_position(amount, price, rules)
    if result.ok:
        assert result.quantity is not None
        assert result.notional <= amount
        assert amount - result.notional < step * price


def test_a_price_in_favour_and_against_a_side_mirror_each_other():
    assert price_in_favour(D(100), D(2), Side.LONG) == D(102)
    assert price_in_favour(D(100), D(2), Side.SHORT) == D(98)
    assert price_against(D(100), D(2), Side.LONG) == D(98)
    assert price_against(D(100), D(2), Side.SHORT) == D(102)


@settings(max_examples=200, deadline=None)
@given(
    price=st.decimals(min_value=D("0.0001"), max_value=D(1_000_000), places=4),
    pct=st.decimals(min_value=D("0.01"), max_value=D("99.99"), places=2),
    side=st.sampled_from(Side),
)
def test_a_stop_lies_against_the_side_and_the_stop_rule_is_that_price(price, pct, side):
    against = price_against(price, pct, side)
    assert (against < price) if side is Side.LONG else (against > price)
    assert price_in_favour(price, pct, side.opposite) == against
    assert stop_price_for(price, pct, side) == against
