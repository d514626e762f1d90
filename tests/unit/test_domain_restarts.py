"""Restart decisions: the delay doubles with recent restarts up to its ceiling, and too many
restarts within the window are a crash loop; old restarts are forgotten."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.restarts import RestartPolicy, decide
from core.domain.timeutil import doubling_delay

POLICY = RestartPolicy(first_delay=1, max_delay=8, crash_loop_restarts=5, crash_loop_window=300)


def test_the_delay_doubles_up_to_the_ceiling():
    delays = [decide(POLICY, [0.0] * n, 10.0).delay for n in range(5)]
    assert delays == [1, 2, 4, 8, 8]


def test_too_many_recent_restarts_are_a_crash_loop_and_old_ones_do_not_count():
    assert not decide(POLICY, [0.0] * 5, 10.0).restart
    assert decide(POLICY, [0.0] * 5, 400.0) == decide(POLICY, [], 400.0)


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=20), st.floats(0, 2000))
def test_a_decision_is_bounded(restarts, now):
    found = decide(POLICY, restarts, now)
    assert 0 <= found.delay <= POLICY.max_delay
    assert found.restart == (found.recent < POLICY.crash_loop_restarts)


def test_a_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        RestartPolicy(first_delay=5, max_delay=1)


def test_a_doubling_delay_starts_at_the_first_and_stops_at_the_ceiling():
    assert [doubling_delay(5.0, n, 60.0) for n in (-1, 0, 1, 2, 3, 4)] == [5, 5, 10, 20, 40, 60]
    assert doubling_delay(1.0, 10_000, 30.0) == 30.0  # no overflow however long it failed
