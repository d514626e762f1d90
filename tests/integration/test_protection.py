"""Protection on the paper exchange: every active position ends a cycle with exactly one full
live stop, trailing's ownership is respected, and nothing is placed for a closed position."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.exchange.client_ids import client_order_id, parse_client_id
from core.services.invariants import check_invariants
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position, record_order
from core.services.protection import check_protection

pytestmark = pytest.mark.integration


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def live_stops(sim, symbol="BTCUSDT"):
    return [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]


def cancel_stops_by_hand(deps, sim, symbol="BTCUSDT"):
    for stop in live_stops(sim, symbol):
        assert deps.exchange.cancel_order(symbol, str(stop["algoId"]), conditional=True)
    assert live_stops(sim, symbol) == []


def event_types(pid):
    with unit_of_work() as s:
        return [
            e.type
            for e in s.scalars(select(Event).where(Event.position_id == pid).order_by(Event.id))
        ]


def position(pid) -> Position:
    with unit_of_work() as s:
        return s.get(Position, pid)


def trailing(pid) -> TrailingStop:
    with unit_of_work() as s:
        return s.get(TrailingStop, pid)


def set_heartbeat(pid, at, owner="trailing"):
    with unit_of_work() as s:
        row = s.get(TrailingStop, pid)
        row.heartbeat_at = at
        row.owner = owner


def exchange_quantity(sim, symbol="BTCUSDT") -> Decimal:
    [p] = [p for p in sim.state()["positions"] if p["symbol"] == symbol]
    return abs(Decimal(p["positionAmt"]))


def test_a_stop_cancelled_by_hand_is_restored_within_one_cycle(sim, deps):
    pid = opened(deps)
    intended = position(pid).stop_price
    cancel_stops_by_hand(deps, sim)

    report = check_protection(deps)

    assert report.stops_placed == 1 and report.failed == 0
    [stop] = live_stops(sim)
    assert Decimal(stop["quantity"]) == exchange_quantity(sim)
    assert Decimal(stop["triggerPrice"]) == intended
    assert parse_client_id(stop["clientAlgoId"]).purpose == "protection"
    types = event_types(pid)
    assert "missing_stop_detected" in types and "stop_set_by_protection" in types
    assert position(pid).unprotected_since is None
    with unit_of_work() as s:
        ledger = s.scalars(select(Order).where(Order.purpose == "protection")).one()
    assert ledger.status == "open" and ledger.client_order_id == stop["clientAlgoId"]

    again = check_protection(deps)
    assert again.healthy == 1 and again.stops_placed == 0
    assert len(live_stops(sim)) == 1


def test_a_healthy_trailing_owner_with_a_live_stop_is_left_alone(sim, deps):
    pid = opened(deps)
    set_heartbeat(pid, datetime.now(UTC))
    deps.exchange.positions()  # ccxt loads leverage brackets once per client
    before = sim.requests()["next"]

    report = check_protection(deps)

    assert report.healthy == 1 and report.rechecked == 0
    assert trailing(pid).owner == "trailing"
    paths = {r["path"] for r in sim.requests(before)["requests"]}
    assert paths == {"/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders", "/fapi/v3/positionRisk"}
    assert len(live_stops(sim)) == 1
    assert "trailing_stop_taken_over" not in event_types(pid)


def test_a_stale_trailing_owner_is_taken_over_without_a_second_stop(sim, deps):
    pid = opened(deps)
    set_heartbeat(pid, datetime.now(UTC) - timedelta(minutes=30))

    report = check_protection(deps)

    assert report.taken_over == 1 and report.stops_placed == 0
    assert trailing(pid).owner == "protection"
    assert "trailing_stop_taken_over" in event_types(pid)
    assert len(live_stops(sim)) == 1
    assert check_protection(deps).healthy == 1  # owner flipped once, not every cycle


def test_a_stale_trailing_owner_without_a_stop_is_taken_over_and_protected_once(sim, deps):
    pid = opened(deps)
    set_heartbeat(pid, datetime.now(UTC) - timedelta(minutes=30))
    cancel_stops_by_hand(deps, sim)

    report = check_protection(deps)

    assert report.taken_over == 1 and report.stops_placed == 1
    assert trailing(pid).owner == "protection"
    assert len(live_stops(sim)) == 1


def test_a_missing_stop_under_a_healthy_trailing_owner_is_still_restored(sim, deps):
    pid = opened(deps)
    set_heartbeat(pid, datetime.now(UTC))
    cancel_stops_by_hand(deps, sim)

    report = check_protection(deps)

    assert report.stops_placed == 1
    assert trailing(pid).owner == "protection"  # trailing takes it back on its next move
    assert len(live_stops(sim)) == 1


def test_a_close_position_stop_with_quantity_zero_counts_as_protection(sim, deps):
    pid = opened(deps)
    cancel_stops_by_hand(deps, sim)
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "50000",
            "closePosition": True,
        },
    )

    report = check_protection(deps)

    assert report.stops_placed == 0 and report.rechecked == 0
    [stop] = live_stops(sim)
    assert stop["closePosition"] is True
    assert "missing_stop_detected" not in event_types(pid)


def test_a_partial_stop_is_replaced_make_before_break(sim, deps):
    pid = opened(deps, "ETHUSDT")
    quantity = exchange_quantity(sim, "ETHUSDT")
    cancel_stops_by_hand(deps, sim, "ETHUSDT")
    half = (quantity / 2).quantize(Decimal("0.001"))
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "ETHUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "2800",
            "quantity": str(half),
            "reduceOnly": True,
        },
    )
    before = sim.requests()["next"]

    report = check_protection(deps)

    assert report.stops_placed == 1 and report.surplus_cancelled == 1
    [stop] = live_stops(sim, "ETHUSDT")
    assert Decimal(stop["quantity"]) == quantity
    mutations = [
        (r["method"], r["path"])
        for r in sim.requests(before)["requests"]
        if r["method"] in ("POST", "DELETE")
    ]
    assert mutations == [("POST", "/fapi/v1/algoOrder"), ("DELETE", "/fapi/v1/algoOrder")]
    assert "surplus_stop_cancelled" in event_types(pid)


def test_a_partial_stop_stays_when_its_replacement_cannot_be_placed(sim, deps):
    pid = opened(deps, "ETHUSDT")
    quantity = exchange_quantity(sim, "ETHUSDT")
    cancel_stops_by_hand(deps, sim, "ETHUSDT")
    half = (quantity / 2).quantize(Decimal("0.001"))
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "ETHUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "2800",
            "quantity": str(half),
            "reduceOnly": True,
        },
    )
    sim.fault("algoOrder", "http_error", method="POST", count=50)
    before = sim.requests()["next"]

    report = check_protection(deps)

    assert report.stops_placed == 0 and report.surplus_cancelled == 0 and report.failed == 1
    [stop] = live_stops(sim, "ETHUSDT")
    assert Decimal(stop["quantity"]) == half
    deletes = [r for r in sim.requests(before)["requests"] if r["method"] == "DELETE"]
    assert deletes == []
    assert "protection_stop_failed" in event_types(pid)
    assert "surplus_stop_cancelled" not in event_types(pid)


def test_a_stop_that_would_trigger_at_once_is_moved_beyond_the_mark(sim, deps):
    pid = opened(deps)
    stop_price = position(pid).stop_price
    cancel_stops_by_hand(deps, sim)
    mark = stop_price - 500
    sim.set_price("BTCUSDT", str(mark))

    report = check_protection(deps)

    assert report.stops_placed == 1
    [stop] = live_stops(sim)
    assert Decimal(stop["triggerPrice"]) <= mark * Decimal("0.995")
    assert position(pid).stop_price == Decimal(stop["triggerPrice"])


def test_no_stop_is_placed_for_a_position_the_exchange_no_longer_has(sim, deps):
    pid = opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    cancel_stops_by_hand(deps, sim)

    report = check_protection(deps)

    assert report.not_on_exchange == 1 and report.stops_placed == 0
    assert live_stops(sim) == []
    assert position(pid).status == "active"  # reconciliation settles it, not protection


def test_a_position_unprotected_past_the_threshold_raises_a_critical_alert(sim, make_deps):
    clock = ManualClock(datetime.now(UTC))
    deps = make_deps(unprotected_alert_seconds=60)
    deps.clock = clock
    pid = opened(deps)
    set_heartbeat(pid, clock.now())
    cancel_stops_by_hand(deps, sim)
    sim.fault("algoOrder", "http_error", method="POST")

    first = check_protection(deps)
    assert first.failed == 1 and first.alerts == 0
    since = position(pid).unprotected_since
    assert since == clock.now()

    clock.advance(seconds=90)
    set_heartbeat(pid, clock.now())
    second = check_protection(deps)
    assert second.alerts == 1
    assert position(pid).unprotected_since == since
    with unit_of_work() as s:
        alert = s.scalars(select(Event).where(Event.type == "position_unprotected_alert")).one()
    assert alert.severity == "critical" and alert.data["stop_restored"] is False

    sim.admin("DELETE", "/_sim/fault")
    clock.advance(seconds=30)
    third = check_protection(deps)
    assert third.stops_placed == 1
    assert position(pid).unprotected_since is None
    assert len(live_stops(sim)) == 1
    assert "protection_stop_failed" in event_types(pid)


def test_protection_check_events_carry_the_cycle_counts(sim, deps):
    opened(deps)
    check_protection(deps)
    with unit_of_work() as s:
        started, completed = (
            s.scalars(select(Event).where(Event.type == t)).one()
            for t in ("protection_check_started", "protection_check_completed")
        )
    assert started.data["positions"] == 1
    assert completed.data["positions"] == 1 and completed.data["healthy"] == 1


def test_concurrent_protection_cycles_place_exactly_one_stop(sim, make_deps):
    deps = make_deps(guardian_lock_wait_seconds=10)
    opened(deps)
    cancel_stops_by_hand(deps, sim)
    start = threading.Barrier(4)
    reports = []

    def cycle():
        start.wait()
        reports.append(check_protection(make_deps(guardian_lock_wait_seconds=10)))

    workers = [threading.Thread(target=cycle) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert sum(r.stops_placed for r in reports) == 1
    assert sum(r.failed + r.deferred for r in reports) == 0
    assert len(live_stops(sim)) == 1


def test_an_interrupted_protection_stop_is_looked_up_before_a_fresh_one_is_sent(sim, deps):
    pid = opened(deps)
    cancel_stops_by_hand(deps, sim)
    p = position(pid)
    lost = client_order_id(pid, p.correlation_id, "protection", 0)
    with unit_of_work() as s:
        record_order(
            s,
            s.get(Position, pid),
            exchange="binance",
            symbol="BTCUSDT",
            client_order_id=lost,
            purpose="protection",
            side="sell",
            order_type="stop_market",
            quantity=p.quantity,
            status="intent",  # a worker died with this send in flight; it never landed
        )
    before = sim.requests()["next"]

    assert check_protection(deps).stops_placed == 1

    [stop] = live_stops(sim)
    assert parse_client_id(stop["clientAlgoId"]).seq == 1
    with unit_of_work() as s:
        assert s.scalars(select(Order).where(Order.client_order_id == lost)).one().status == (
            "rejected"
        )
    calls = [(r["method"], r["path"]) for r in sim.requests(before)["requests"]]
    lookup = calls.index(("GET", "/fapi/v1/algoOrder"))
    assert lookup < calls.index(("POST", "/fapi/v1/algoOrder"))


def test_a_stop_one_lot_short_of_the_position_is_replaced_by_a_full_one(sim, deps):
    # SOLUSDT trades in whole lots (step 1): one lot added by hand leaves the engine's stop
    # a whole lot short, which is no rounding difference: that lot is unprotected
    opened(deps, "SOLUSDT")
    [old] = live_stops(sim, "SOLUSDT")
    sim.admin("POST", "/_sim/open_position", {"symbol": "SOLUSDT", "side": "BUY", "quantity": "1"})
    grown = exchange_quantity(sim, "SOLUSDT")
    assert grown == Decimal(old["quantity"]) + 1

    report = check_protection(deps)

    assert report.stops_placed == 1 and report.surplus_cancelled == 1
    [stop] = live_stops(sim, "SOLUSDT")
    assert Decimal(stop["quantity"]) == grown
    assert stop["algoId"] != old["algoId"]
    # the DB quantity is reconciliation's to correct; the position itself is protected
    kinds = {v.kind.value for v in check_invariants(deps).violations}
    assert kinds == {"position_mismatch"}
