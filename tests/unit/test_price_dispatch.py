"""How a frame's claimed symbols are split into price tasks (core/ingest/price_dispatch.py)."""

from hypothesis import given
from hypothesis import strategies as st

from core import task_names as names
from core.ingest.price_dispatch import price_task, split_evenly


@given(st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=80), st.integers(1, 20))
def test_every_symbol_goes_once_in_the_fewest_groups_of_even_size(symbols, per_task):
    groups = split_evenly(symbols, per_task)
    assert sorted(s for g in groups for s in g) == sorted(symbols)
    assert len(groups) == -(-len(symbols) // per_task)
    sizes = [len(g) for g in groups]
    assert all(0 < size <= per_task for size in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_a_burst_of_17_at_8_per_task_is_three_tasks_not_8_8_1():
    assert sorted(len(g) for g in split_evenly([str(i) for i in range(17)], 8)) == [5, 6, 6]


def test_one_per_task_is_one_task_per_symbol_as_before():
    assert split_evenly(["A", "B", "C"], 1) == [["A"], ["B"], ["C"]]


def test_a_lone_symbol_keeps_the_one_symbol_task_and_several_share_one():
    assert price_task("binance", ["BTCUSDT"]) == (names.ON_PRICE, ("binance", "BTCUSDT"))
    assert price_task("bybit", ["A", "B"]) == (names.ON_PRICES, ("bybit", ["A", "B"]))
