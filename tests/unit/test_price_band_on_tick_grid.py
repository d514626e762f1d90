"""The trailing band on the exchange's tick grid: exact, so ticks that cannot move the stop
never wake the price task (regression: the band ignored the tick size and collapsed to the
clamp threshold whenever the next step was reached only before rounding)."""

from datetime import UTC, datetime
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.sides import Side
from core.domain.trailing import (
    PriceWindow,
    TrailingAction,
    TrailingParams,
    TrailingState,
    band,
    decide,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
PARAMS = TrailingParams(min_update_interval=NOW - NOW)  # no rate limit


def activated(side: Side, extreme: D, stop: D) -> TrailingState:
    return TrailingState(
        side=side,
        entry_price=D(10),
        quantity=D(1),
        opened_at=NOW,
        activation_price=D("10.15") if side is Side.LONG else D("9.85"),
        highest_price=extreme if side is Side.LONG else D(10),
        lowest_price=extreme if side is Side.SHORT else D(10),
        stop_price=stop,
        activated=True,
        activated_at=NOW,
    )


def test_a_step_reached_only_before_rounding_keeps_the_price_inside_the_band():
    # trail(10.2216) = 10.170492 >= stop + 0.1 % = 10.1704603, but on the 0.0001 grid the
    # stop would be 10.1704: not a qualifying move until the high rises again
    state = activated(Side.LONG, D("10.2216"), D("10.1603"))
    tick = D("0.0001")
    price = D("10.2175")  # above the clamp threshold, below the next qualifying high
    assert decide(state, PriceWindow.at(price), NOW, PARAMS, tick).action is TrailingAction.NONE
    assert not band(state, PARAMS, NOW).contains(price)  # without the grid: a task per tick
    on_grid = band(state, PARAMS, NOW, tick)
    assert on_grid.contains(price)
    beyond = on_grid.high * (1 + D("1e-9"))
    assert decide(state, PriceWindow.at(beyond), NOW, PARAMS, tick).send  # and it is exact


def test_with_no_minimum_step_a_stop_already_at_the_candidate_waits_for_a_new_extreme():
    params = TrailingParams(min_update_interval=NOW - NOW, min_step_pct=D(0))
    state = activated(Side.LONG, D("10.2"), D("10.149"))  # stop == trail(10.2) exactly
    price = D("10.19")
    assert decide(state, PriceWindow.at(price), NOW, params).action is TrailingAction.NONE
    assert band(state, params, NOW).contains(price)
    assert band(state, params, NOW, D("0.001")).contains(price)


ticks = st.sampled_from([D("0.0001"), D("0.001"), D("0.01"), D("0.5")])


@given(
    side=st.sampled_from(list(Side)),
    extreme_pct=st.decimals(min_value=D("1.5"), max_value=D("30"), places=3),
    slack_pct=st.decimals(min_value=D("0"), max_value=D("3"), places=3),
    tick=ticks,
    step_pct=st.sampled_from([D(0), D("0.05"), D("0.1"), D("0.5")]),
)
@settings(max_examples=300, deadline=None)
def test_property_the_band_on_the_grid_is_valid_and_tight_at_its_move_threshold(
    side, extreme_pct, slack_pct, tick, step_pct
):
    params = TrailingParams(min_update_interval=NOW - NOW, min_step_pct=step_pct)
    sign = 1 if side is Side.LONG else -1
    extreme = D(100) * (1 + sign * extreme_pct / 100)
    # a live stop somewhat looser than the trailing candidate, on the grid
    candidate = extreme * (1 - sign * (params.callback_pct + slack_pct) / 100)
    stop = (candidate / tick).to_integral_value() * tick
    state = TrailingState(
        side=side,
        entry_price=D(100),
        quantity=D(1),
        opened_at=NOW,
        activation_price=D(100),
        highest_price=extreme if side is Side.LONG else D(100),
        lowest_price=extreme if side is Side.SHORT else D(100),
        stop_price=stop,
        activated=True,
        activated_at=NOW,
    )
    b = band(state, params, NOW, tick)
    edge = b.high if side is Side.LONG else b.low
    if edge is None or b.is_empty:
        return
    inside = edge * (1 - sign * D("1e-7"))
    outside = edge * (1 + sign * D("1e-7"))
    assert b.contains(inside)
    assert not decide(state, PriceWindow.at(inside), NOW, params, tick).send
    assert decide(state, PriceWindow.at(outside), NOW, params, tick).send
