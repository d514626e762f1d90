"""The atomic open against the paper exchange: every branch leaves a protected or flat
position, one order per intent, and its events."""

import threading
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position

pytestmark = pytest.mark.integration


def new_position(symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition("binance", symbol, side))
        assert position is not None
        return position.id


def exchange_state(sim):
    return sim.state()


def stops_for(state, symbol):
    return [o for o in state["open_algo_orders"] if o["symbol"] == symbol]


def positions_on(state, symbol):
    return [
        p for p in state["positions"] if p["symbol"] == symbol and Decimal(p["positionAmt"]) != 0
    ]


def event_types(position_id):
    with unit_of_work() as s:
        return [
            e.type
            for e in s.scalars(
                select(Event).where(Event.position_id == position_id).order_by(Event.id)
            )
        ]


def load(position_id) -> Position:
    with unit_of_work() as s:
        return s.get(Position, position_id)


def test_happy_path_opens_with_exactly_one_stop_for_the_filled_quantity(sim, deps):
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    position = load(pid)
    assert position.status == "active"
    state = exchange_state(sim)
    [exchange_position] = positions_on(state, "BTCUSDT")
    [stop] = stops_for(state, "BTCUSDT")
    assert Decimal(stop["quantity"]) == Decimal(exchange_position["positionAmt"]).copy_abs()
    assert position.quantity == Decimal(exchange_position["positionAmt"]).copy_abs()
    assert stop["reduceOnly"] is True and stop["workingType"] == "MARK_PRICE"
    assert Decimal(stop["triggerPrice"]) == position.stop_price < position.entry_price
    types = event_types(pid)
    for expected in (
        "position_created",
        "entry_order_placed",
        "entry_order_filled",
        "stop_loss_placed",
        "trailing_stop_created",
    ):
        assert expected in types
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is not None
        purposes = sorted(o.purpose for o in s.scalars(select(Order)))
    assert purposes == ["entry", "stop"]


def test_short_gets_its_stop_above_entry(sim, deps):
    pid = new_position("ETHUSDT", "short")
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    position = load(pid)
    assert position.stop_price > position.entry_price
    [stop] = stops_for(exchange_state(sim), "ETHUSDT")
    assert stop["side"] == "BUY"


def test_running_an_opening_twice_places_nothing_twice(sim, deps):
    pid = new_position()
    open_position(deps, pid)
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    state = exchange_state(sim)
    assert len(stops_for(state, "BTCUSDT")) == 1
    entries = [
        r
        for r in sim.requests()["requests"]
        if r["path"].endswith("/order") and r["method"] == "POST"
    ]
    assert len(entries) == 1


def test_partial_fill_is_protected_for_the_filled_quantity(sim, deps):
    sim.fault("order", "partial_fill", fraction="0.5", count=1, method="POST")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    position = load(pid)
    assert position.quantity < position.requested_quantity
    [stop] = stops_for(exchange_state(sim), "BTCUSDT")
    assert Decimal(stop["quantity"]) == position.quantity
    assert "entry_order_partially_filled" in event_types(pid)


def test_delayed_fill_is_awaited_by_polling(sim, deps):
    sim.fault("order", "delayed_fill", delay_ms=300, count=1, method="POST")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE


def test_stop_refused_rolls_back_and_verifies_the_close(sim, deps):
    sim.fault("algoOrder", "http_error", method="POST", count=10)
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ROLLED_BACK
    assert load(pid).status == "rolled_back"
    state = exchange_state(sim)
    assert positions_on(state, "BTCUSDT") == []
    types = event_types(pid)
    assert "stop_loss_failed" in types and "position_rolled_back" in types


def test_failed_rollback_leaves_an_emergency_stop_and_a_critical_event(sim, deps):
    # three stop attempts fail, the rollback close fails, the emergency stop goes through
    sim.fault("algoOrder", "http_error", method="POST", count=3)
    pid = new_position()
    original_create = deps.exchange.create_market_order

    def refuse_reduce_only(symbol, side, quantity, client_id, *, reduce_only=False):
        if reduce_only:
            from core.exchange.errors import Retryable

            raise Retryable("simulated: close refused")
        return original_create(symbol, side, quantity, client_id, reduce_only=reduce_only)

    deps.exchange.create_market_order = refuse_reduce_only
    assert open_position(deps, pid) is OpenOutcome.EMERGENCY_STOP
    position = load(pid)
    assert position.status == "active"
    [stop] = stops_for(exchange_state(sim), "BTCUSDT")
    assert Decimal(stop["triggerPrice"]) == position.stop_price
    with unit_of_work() as s:
        critical = {e.type for e in s.scalars(select(Event).where(Event.severity == "critical"))}
    assert {"rollback_failed", "emergency_stop_placed"} <= critical


def test_timeout_after_accept_on_entry_makes_exactly_one_entry(sim, deps):
    sim.fault("order", "timeout_after_accept", method="POST", count=1, mode="drop")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    [exchange_position] = positions_on(exchange_state(sim), "BTCUSDT")
    assert Decimal(exchange_position["positionAmt"]) == load(pid).quantity
    posts = [
        r
        for r in sim.requests()["requests"]
        if r["path"].endswith("/order") and r["method"] == "POST"
    ]
    assert len(posts) == 1
    assert "order_lookup_before_retry" in event_types(pid)


def test_timeout_after_accept_on_stop_makes_exactly_one_stop(sim, deps):
    sim.fault("algoOrder", "timeout_after_accept", method="POST", count=1, mode="drop")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    assert len(stops_for(exchange_state(sim), "BTCUSDT")) == 1


def test_insufficient_funds_fails_the_opening_and_pauses_new_ones(sim, deps, make_deps):
    rich = make_deps(position_size_usdt="150000")
    pid = new_position()
    assert open_position(rich, pid) is OpenOutcome.FAILED
    types = event_types(pid)
    assert "insufficient_funds" in types and "openings_paused" in types
    second = new_position("ETHUSDT")
    assert open_position(deps, second) is OpenOutcome.FAILED
    assert positions_on(exchange_state(sim), "ETHUSDT") == []


def test_below_minimum_fails_without_sending(sim, make_deps):
    tiny = make_deps(position_size_usdt="5")
    pid = new_position()
    assert open_position(tiny, pid) is OpenOutcome.FAILED
    assert "order_below_minimum" in event_types(pid)
    assert not [
        r
        for r in sim.requests()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/order")
    ]


def test_symbol_not_trading_fails_with_its_event(sim, deps):
    pid = new_position("LUNAUSDT")
    assert open_position(deps, pid) is OpenOutcome.FAILED
    assert "symbol_unavailable" in event_types(pid)


def test_twenty_concurrent_openings_and_adoptions_make_one_position(sim, deps, clean_db):
    created, refused = [], []
    barrier = threading.Barrier(24)

    def attempt(status):
        from core.domain.positions import PositionStatus

        barrier.wait()
        with unit_of_work() as s:
            p = create_position(
                s, NewPosition("binance", "SOLUSDT", "long", status=PositionStatus(status))
            )
            (created if p else refused).append(p.id if p else None)

    threads = [threading.Thread(target=attempt, args=("pending_entry",)) for _ in range(20)]
    threads += [threading.Thread(target=attempt, args=("pending_sl",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1 and len(refused) == 23
    with unit_of_work() as s:
        assert s.scalars(select(Position)).all().__len__() == 1
        dup_events = s.scalars(
            select(Event).where(Event.type == "position_duplicate_prevented")
        ).all()
    assert len(dup_events) == 23
