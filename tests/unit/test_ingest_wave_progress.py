"""Parallel wave openings (core.domain.wave_progress): never more than N, the buffer fills
failures, a pause stops new starts, done only when nothing is in flight."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.signals import Action, Exchange, Signal
from core.domain.wave_progress import MemberState, plan_launches
from core.domain.waves import WaveSelection

M = MemberState
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def selection(candidates: int, target: int) -> WaveSelection:
    signals = tuple(
        Signal(f"s{i}", f"C{i}USDT", Exchange.BINANCE, Action.BUY, Decimal(90 - i), Decimal(50), T)
        for i in range(candidates)
    )
    return WaveSelection(signals, target, ())


def test_a_fresh_wave_starts_exactly_its_target_at_once():
    plan = plan_launches(selection(5, 3), [M.UNSTARTED] * 5)
    assert plan.launch == (0, 1, 2)
    assert not plan.done and plan.in_flight == 3


def test_nothing_more_starts_while_the_target_is_in_flight():
    plan = plan_launches(
        selection(5, 3), [M.IN_FLIGHT, M.OPENED, M.IN_FLIGHT, M.UNSTARTED, M.UNSTARTED]
    )
    assert plan.launch == () and not plan.done


def test_a_failure_frees_its_slot_for_the_next_candidate_in_rank_order():
    plan = plan_launches(
        selection(5, 3), [M.OPENED, M.FAILED, M.IN_FLIGHT, M.UNSTARTED, M.UNSTARTED]
    )
    assert plan.launch == (3,)


def test_a_skipped_candidate_counts_like_a_failure():
    plan = plan_launches(selection(4, 2), [M.SKIPPED, M.OPENED, M.UNSTARTED, M.UNSTARTED])
    assert plan.launch == (2,)


def test_done_when_the_target_opened_and_nothing_is_in_flight():
    plan = plan_launches(
        selection(5, 2), [M.OPENED, M.OPENED, M.UNSTARTED, M.UNSTARTED, M.UNSTARTED]
    )
    assert plan.launch == () and plan.done and plan.opened == 2


def test_done_short_of_the_target_when_candidates_are_exhausted():
    plan = plan_launches(selection(3, 2), [M.OPENED, M.FAILED, M.FAILED])
    assert plan.done and plan.opened == 1 and "exhausted" in plan.reason


def test_paused_openings_start_nothing_and_finish_once_in_flight_ones_end():
    sel = selection(4, 2)
    assert plan_launches(
        sel, [M.FAILED, M.IN_FLIGHT, M.UNSTARTED, M.UNSTARTED], openings_paused=True
    ) == (
        plan_launches(sel, [M.FAILED, M.IN_FLIGHT, M.UNSTARTED, M.UNSTARTED], openings_paused=True)
    )
    waiting = plan_launches(
        sel, [M.FAILED, M.IN_FLIGHT, M.UNSTARTED, M.UNSTARTED], openings_paused=True
    )
    assert waiting.launch == () and not waiting.done
    finished = plan_launches(
        sel, [M.FAILED, M.FAILED, M.UNSTARTED, M.UNSTARTED], openings_paused=True
    )
    assert finished.done and "paused" in finished.reason


def test_a_zero_target_wave_is_done_at_once():
    plan = plan_launches(WaveSelection((), 0, ()), [])
    assert plan.done and plan.launch == ()


def test_states_must_follow_rank_order_and_match_the_candidates():
    with pytest.raises(ValueError, match="rank order"):
        plan_launches(selection(3, 2), [M.UNSTARTED, M.OPENED, M.UNSTARTED])
    with pytest.raises(ValueError, match="states"):
        plan_launches(selection(3, 2), [M.UNSTARTED])


@settings(max_examples=300, deadline=None)
@given(
    target=st.integers(0, 6),
    buffer=st.integers(0, 4),
    successes=st.lists(st.booleans(), min_size=10, max_size=10),
    order=st.randoms(use_true_random=False),
)
def test_any_completion_order_opens_min_of_target_and_successes_never_more(
    target, buffer, successes, order
):
    """Openings finish in any order; the wave never has more than N open or in flight, and
    ends with exactly min(N, successful candidates) open."""
    candidates = min(target + buffer, 10) if target else 0
    sel = selection(candidates, target)
    states = [M.UNSTARTED] * candidates
    while True:
        plan = plan_launches(sel, states)
        for i in plan.launch:
            states[i] = M.IN_FLIGHT
        live = sum(1 for s in states if s in (M.IN_FLIGHT, M.OPENED))
        assert live <= target
        in_flight = [i for i, s in enumerate(states) if s is M.IN_FLIGHT]
        if not in_flight:
            assert plan.done
            break
        finished = order.choice(in_flight)
        states[finished] = M.OPENED if successes[finished] else M.FAILED
    opened = states.count(M.OPENED)
    assert opened == min(target, sum(successes[:candidates]))
