import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.positions import (
    INITIAL,
    INTERMEDIATE,
    NON_TERMINAL,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    allowed_triggers,
    next_status,
)
from core.domain.positions import (
    PositionStatus as S,
)
from core.domain.positions import (
    PositionTrigger as T,
)

statuses = st.sampled_from(list(S))
triggers = st.sampled_from(list(T))


def test_happy_path_of_an_opening_reaches_active():
    status = S.PENDING_ENTRY
    for trigger in (T.ENTRY_SENT, T.ENTRY_FILLED, T.STOP_PLACED):
        status = next_status(status, trigger)
    assert status is S.ACTIVE


def test_stop_failure_leads_through_closing_to_rolled_back():
    assert next_status(S.PENDING_SL, T.STOP_FAILED) is S.CLOSING
    assert next_status(S.CLOSING, T.ROLLBACK_DONE) is S.ROLLED_BACK


def test_an_active_position_cannot_go_back_to_pending_entry():
    with pytest.raises(IllegalTransition):
        next_status(S.ACTIVE, T.ENTRY_SENT)


@given(statuses, triggers)
def test_every_pair_is_either_in_the_table_or_raises(status, trigger):
    if (status, trigger) in TRANSITIONS:
        assert next_status(status, trigger) is TRANSITIONS[(status, trigger)]
    else:
        with pytest.raises(IllegalTransition):
            next_status(status, trigger)


@given(st.sampled_from(sorted(TERMINAL)), triggers)
def test_terminal_statuses_have_no_way_out(status, trigger):
    with pytest.raises(IllegalTransition):
        next_status(status, trigger)


@given(st.sampled_from(sorted(NON_TERMINAL)), st.lists(triggers, max_size=12))
def test_no_walk_opens_twice_or_leaves_an_end(status, walk):
    """Once active, a position never returns to an opening status (an entry is never sent
    again for it); once terminal, nothing moves it."""
    was_active = status == S.ACTIVE
    for trigger in walk:
        if status in TERMINAL:
            assert not allowed_triggers(status)
            break
        if trigger in allowed_triggers(status):
            status = next_status(status, trigger)
            if was_active:
                assert status not in INTERMEDIATE, (trigger, status)
            was_active = was_active or status == S.ACTIVE


def test_every_non_terminal_status_can_reach_a_terminal_one():
    reachable_terminal = {}
    for start in NON_TERMINAL:
        seen, frontier = {start}, [start]
        while frontier:
            current = frontier.pop()
            for trigger in allowed_triggers(current):
                nxt = next_status(current, trigger)
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        reachable_terminal[start] = bool(seen & TERMINAL)
    assert all(reachable_terminal.values()), reachable_terminal


def test_intermediate_statuses_are_non_terminal_and_records_start_only_at_initial_ones():
    assert INTERMEDIATE <= NON_TERMINAL
    assert INITIAL <= NON_TERMINAL
    assert S.ACTIVE not in INITIAL


def test_a_views_facts_are_the_shared_fields_only():
    """A view built from another view carries the position facts over, and nothing else."""
    from dataclasses import dataclass
    from decimal import Decimal

    from core.domain.positions import PositionFacts

    @dataclass(frozen=True)
    class Wide(PositionFacts):
        note: str

    wide = Wide(7, "binance", "BTCUSDT", "long", "active", Decimal("0.5"), note="x")
    assert wide.facts() == {
        "id": 7,
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "side": "long",
        "status": "active",
        "quantity": Decimal("0.5"),
    }
