"""How a frame's claimed symbols are split into price tasks (core/ingest/price_dispatch.py)."""

from hypothesis import given
from hypothesis import strategies as st

from core import task_names as names
from core.ingest.price_dispatch import price_task, split_evenly


@given(
    st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=80),
    st.integers(1, 20),
    st.integers(1, 8),
    st.integers(1, 10),
)
def test_every_symbol_goes_once_in_groups_of_even_size_over_the_slots(
    symbols, per_task, slots, spread_from
):
    groups = split_evenly(symbols, per_task, slots, spread_from)
    assert sorted(s for g in groups for s in g) == sorted(symbols)
    fewest = -(-len(symbols) // per_task)
    spread = slots if len(symbols) >= spread_from else 1
    assert len(groups) == max(fewest, min(len(symbols), spread))
    sizes = [len(g) for g in groups]
    assert all(0 < size <= per_task for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_a_burst_of_17_at_8_per_task_is_three_tasks_not_8_8_1():
    assert sorted(len(g) for g in split_evenly([str(i) for i in range(17)], 8)) == [5, 6, 6]


def test_two_symbols_over_two_slots_are_two_tasks_and_a_burst_fills_them_in_eights():
    assert split_evenly(["A", "B"], 8, slots=2) == [["A"], ["B"]]
    assert sorted(len(g) for g in split_evenly([str(i) for i in range(16)], 8, 2)) == [8, 8]
    assert sorted(len(g) for g in split_evenly([str(i) for i in range(16)], 8, 4)) == [4] * 4


def test_a_small_frame_rides_in_one_task_and_a_burst_is_spread_over_the_slots():
    assert split_evenly(["A", "B"], 8, slots=2, spread_from=4) == [["A", "B"]]
    assert split_evenly(["A", "B", "C"], 8, slots=2, spread_from=4) == [["A", "B", "C"]]
    assert split_evenly(["A", "B", "C", "D"], 8, 2, spread_from=4) == [["A", "C"], ["B", "D"]]
    assert sorted(len(g) for g in split_evenly([str(i) for i in range(17)], 8, 2, 4)) == [5, 6, 6]
    # one symbol per task stays one task per symbol, whatever the frame's size
    assert split_evenly(["A", "B"], 1, slots=2, spread_from=4) == [["A"], ["B"]]


def test_one_per_task_is_one_task_per_symbol_as_before():
    assert split_evenly(["A", "B", "C"], 1) == [["A"], ["B"], ["C"]]


def test_a_lone_symbol_keeps_the_one_symbol_task_and_several_share_one():
    assert price_task("binance", ["BTCUSDT"]) == (names.ON_PRICE, ("binance", "BTCUSDT"))
    assert price_task("bybit", ["A", "B"]) == (names.ON_PRICES, ("bybit", ["A", "B"]))
