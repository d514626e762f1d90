"""The paper exchange's history and its indexes (sim/orders.Ledger), the minute's weight
(sim/requestlog.RequestLog): the answers of a scan of the whole history, without the scan."""

import pickle
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from sim import requestlog
from sim.orders import AlgoOrder, Ledger, Order
from sim.requestlog import RequestLog

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CLIENT_IDS = ("a", "b", "c")
CLOSED = ("FILLED", "CANCELED", "EXPIRED")


def order(order_id: int, client_id: str, symbol: str) -> Order:
    return Order(order_id, client_id, symbol, "BUY", "LIMIT", "LIMIT", Decimal(1), Decimal(1), 0)


def algo(algo_id: int, client_id: str, symbol: str) -> AlgoOrder:
    return AlgoOrder(algo_id, client_id, symbol, "SELL", "STOP_MARKET", Decimal(1), Decimal(1), 0)


# a step: add an order or an algo order (symbol, client id), or close the n-th one
steps = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.sampled_from(SYMBOLS), st.sampled_from(CLIENT_IDS)),
        st.tuples(st.just("algo"), st.sampled_from(SYMBOLS), st.sampled_from(CLIENT_IDS)),
        st.tuples(st.just("close"), st.integers(0, 40), st.sampled_from(CLOSED)),
    ),
    max_size=60,
)


def play(ledger: Ledger, plan: list[tuple[str, object, object]]) -> None:
    made: list[Order | AlgoOrder] = []
    for kind, first, second in plan:
        if kind == "order":
            made.append(order(len(made) + 1, str(second), str(first)))
            ledger.add_order(made[-1])  # type: ignore[arg-type]
        elif kind == "algo":
            made.append(algo(len(made) + 1, str(second), str(first)))
            ledger.add_algo(made[-1])  # type: ignore[arg-type]
        elif made:
            made[int(first) % len(made)].status = str(second)  # type: ignore[call-overload]


def assert_as_a_scan(ledger: Ledger) -> None:
    """Every index answers what a scan of the whole history answers."""
    assert ledger.open_orders() == [o for o in ledger.orders.values() if o.is_open]
    assert ledger.open_algos() == [a for a in ledger.algo_orders.values() if a.is_open]
    for symbol in SYMBOLS:
        for cid in CLIENT_IDS:
            scanned = [
                o for o in ledger.orders.values() if o.symbol == symbol and o.client_id == cid
            ]
            assert ledger.latest_order(symbol, cid) == (scanned[-1] if scanned else None)
    for cid in CLIENT_IDS:
        scanned_algos = [a for a in ledger.algo_orders.values() if a.client_algo_id == cid]
        assert ledger.latest_algo(cid) == (scanned_algos[-1] if scanned_algos else None)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_the_indexes_answer_what_a_scan_of_the_history_answers(plan):
    ledger = Ledger()
    play(ledger, plan)
    assert_as_a_scan(ledger)
    assert_as_a_scan(ledger)  # pruning while reading changes no answer


@settings(max_examples=50, deadline=None)
@given(steps)
def test_a_persisted_ledger_keeps_only_its_history_and_rebuilds_the_indexes(plan):
    ledger = Ledger()
    play(ledger, plan)
    restored = pickle.loads(pickle.dumps(ledger))
    assert set(ledger.__getstate__()) == {"orders", "algo_orders", "fills"}
    assert restored == ledger
    assert_as_a_scan(restored)


def test_a_ledger_persisted_before_the_indexes_loads_with_them():
    """An account file written by the version without indexes: a plain dataclass state."""
    old = Ledger()
    old.add_order(order(1, "a", "BTCUSDT"))
    old.add_algo(algo(2, "b", "BTCUSDT"))
    restored = Ledger.__new__(Ledger)
    restored.__setstate__({"orders": old.orders, "algo_orders": old.algo_orders, "fills": []})
    assert restored.latest_order("BTCUSDT", "a") is not None
    assert [a.client_algo_id for a in restored.open_algos()] == ["b"]


def test_the_minutes_weight_is_the_sum_of_the_requests_still_in_the_minute(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(requestlog.time, "time", lambda: now[0])
    log = RequestLog()
    for step in range(100):
        now[0] += 1.7
        log.record("GET", "/fapi/v1/order", weight=step % 7)
        horizon = now[0] * 1000 - requestlog.WINDOW_MS
        expected = sum(i % 7 for i in range(step + 1) if 1_000_000_000 + (i + 1) * 1700 >= horizon)
        assert log.used_weight() == expected
    log.clear()
    assert log.used_weight() == 0
