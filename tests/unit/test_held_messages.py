"""The stalled-holder decision: a received message held past the bound that no worker with
a fresh main-loop beat claims (core/domain/held_messages.py)."""

from hypothesis import given
from hypothesis import strategies as st

from core.domain.held_messages import (
    BROKER_RECONNECT_SECONDS,
    HeldMessage,
    LoopBeat,
    stalled_holds,
)

NOW = 1_000_000.0
BOUND = 30.0


def _held(tag: str, held_for: float) -> HeldMessage:
    return HeldMessage(tag, "stops", "vigil.stops.trailing_sweep", f"id-{tag}", NOW - held_for)


def test_a_long_task_of_a_live_worker_is_not_stalled():
    beats = [LoopBeat("w1@h", NOW - 1, frozenset({"a"}))]
    assert stalled_holds([_held("a", 3600)], beats, NOW, BOUND) == []


def test_a_message_of_a_worker_whose_loop_went_silent_is_stalled_and_names_the_worker():
    beats = [
        LoopBeat("w1@h", NOW - 45, frozenset({"a"})),  # stopped 45 s ago, holding a
        LoopBeat("w2@h", NOW - 1, frozenset({"b"})),  # consuming
    ]
    [hold] = stalled_holds([_held("a", 50), _held("b", 50)], beats, NOW, BOUND)
    assert hold.message.tag == "a" and hold.held_seconds == 50
    assert hold.worker == "w1@h" and hold.worker_silent_seconds == 45


def test_a_message_no_beat_ever_listed_is_stalled_without_a_name():
    [hold] = stalled_holds([_held("a", 31)], [], NOW, BOUND)
    assert hold.worker is None and hold.worker_silent_seconds is None


def test_nothing_is_stalled_within_the_bound():
    # received 29 s ago by a worker that has been silent since: not yet
    beats = [LoopBeat("w1@h", NOW - 29, frozenset({"a"}))]
    assert stalled_holds([_held("a", 29)], beats, NOW, BOUND) == []


def test_a_message_waiting_for_its_eta_counts_from_the_eta():
    # held_since is max(receipt, ETA): an ETA 10 s ago on a message received 5 min ago
    eta_message = HeldMessage("a", "orders", "t", "i", NOW - 10)
    assert stalled_holds([eta_message], [], NOW, BOUND) == []


def test_the_longest_held_comes_first():
    holds = stalled_holds([_held("a", 40), _held("b", 90)], [], NOW, BOUND)
    assert [h.message.tag for h in holds] == ["b", "a"]


@given(
    held_for=st.floats(0, 600),
    silent=st.floats(0, 600),
    listed=st.booleans(),
)
def test_stalled_exactly_when_held_past_the_bound_and_not_claimed_by_a_fresh_beat(
    held_for: float, silent: float, listed: bool
):
    beats = [LoopBeat("w", NOW - silent, frozenset({"a"} if listed else set()))]
    stalled = bool(stalled_holds([_held("a", held_for)], beats, NOW, BOUND))
    # the ages as the decision sees them (epoch arithmetic rounds at the boundary)
    claimed = listed and NOW - (NOW - silent) <= BOUND
    assert stalled == (NOW - (NOW - held_for) > BOUND and not claimed)


def test_after_a_broker_restart_a_message_held_from_before_waits_for_its_worker_to_reconnect():
    started = NOW - 20  # Redis started again 20 s ago; its worker has not beaten since
    beats = [LoopBeat("w1@h", NOW - 50, frozenset({"a"}))]
    before, after = _held("a", 60), _held("b", 15)
    assert stalled_holds([before], beats, NOW, BOUND, broker_started_at=started) == []
    # once the bound plus kombu's longest reconnect wait has passed, it is named again
    later = NOW + BOUND + BROKER_RECONNECT_SECONDS
    [hold] = stalled_holds([before], beats, later, BOUND, broker_started_at=started)
    assert hold.worker == "w1@h"
    # a message received since the start is judged as always
    [hold] = stalled_holds([after], [], NOW + 20, BOUND, broker_started_at=started)
    assert hold.message.tag == "b"
