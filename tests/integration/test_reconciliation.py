"""Reconciliation on the paper exchange: the exchange is right, and no path creates a second
position for a symbol or a second stop for a position."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import AgedPosition, Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import PositionStatus
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.reconciliation import reconcile_positions

pytestmark = pytest.mark.integration


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def live_stops(sim, symbol):
    return [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]


def positions_for(symbol):
    with unit_of_work() as s:
        return s.scalars(
            select(Position).where(Position.symbol == symbol).order_by(Position.id)
        ).all()


def events_of(event_type):
    with unit_of_work() as s:
        return s.scalars(select(Event).where(Event.type == event_type).order_by(Event.id)).all()


def test_a_position_closed_by_hand_is_settled_as_phantom_with_its_real_exit(sim, deps):
    pid = opened(deps)
    with unit_of_work() as s:
        s.add(AgedPosition(position_id=pid, phase="grace", detected_at=datetime.now(UTC)))
    quantity = positions_for("BTCUSDT")[0].quantity
    take_profit = {"type": "LIMIT", "price": "70000", "quantity": str(quantity)}
    sim.admin(
        "POST",
        "/_sim/order",
        {"symbol": "BTCUSDT", "side": "SELL", "reduceOnly": True, **take_profit},
    )  # placed by hand: not the engine's, so the close path's own cleanup leaves it
    sim.set_price("BTCUSDT", "61000")
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})

    report = reconcile_positions(deps)

    assert report.phantoms_closed == 1 and report.zombies_cancelled == 1
    assert sim.state()["open_orders"] == []
    [position] = positions_for("BTCUSDT")
    assert position.status == "closed" and position.close_reason == "phantom"
    assert position.exit_price == Decimal("61000") and position.realized_pnl > 0
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is None and s.get(AgedPosition, pid) is None
    assert live_stops(sim, "BTCUSDT") == []  # the venue kept the stop; the close path took it
    assert [e.position_id for e in events_of("phantom_position_detected")] == [pid]
    assert [e.position_id for e in events_of("phantom_position_closed")] == [pid]
    assert reconcile_positions(deps).phantoms_closed == 0


def test_a_position_opened_by_hand_is_adopted_and_protected_once(sim, deps):
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "SELL", "quantity": "0.5"}
    )

    report = reconcile_positions(deps)

    assert report.adopted == 1
    [position] = positions_for("ETHUSDT")
    assert position.status == "active" and position.side == "short"
    assert position.quantity == Decimal("0.5") and position.entry_price == Decimal("3000")
    [stop] = live_stops(sim, "ETHUSDT")
    assert stop["side"] == "BUY" and Decimal(stop["quantity"]) == Decimal("0.5")
    assert Decimal(stop["triggerPrice"]) > Decimal("3000")
    with unit_of_work() as s:
        assert s.get(TrailingStop, position.id) is not None
    [added] = events_of("missing_position_added")
    assert added.position_id == position.id and added.data["exchange_quantity"] == "0.5"

    again = reconcile_positions(deps)
    assert again.adopted == 0 and again.actions == {}
    assert len(positions_for("ETHUSDT")) == 1 and len(live_stops(sim, "ETHUSDT")) == 1


def test_an_opening_in_pending_sl_is_not_taken_for_a_missing_position(sim, make_deps):
    deps = make_deps(intermediate_state_grace_seconds=60)
    sim.admin("POST", "/_sim/open_position", {"symbol": "SOLUSDT", "side": "BUY", "quantity": "2"})
    with unit_of_work() as s:
        position = create_position(
            s,
            NewPosition(
                "binance",
                "SOLUSDT",
                "long",
                status=PositionStatus.PENDING_SL,
                quantity=Decimal("2"),
                entry_price=Decimal("150"),
            ),
        )
        pid = position.id

    young = reconcile_positions(deps)

    assert young.waiting == 1 and young.adopted == 0
    assert [p.id for p in positions_for("SOLUSDT")] == [pid]
    assert live_stops(sim, "SOLUSDT") == []  # its own path places the stop, not reconciliation
    assert events_of("missing_position_added") == []

    deps.clock = ManualClock(datetime.now(UTC) + timedelta(minutes=5))
    stuck = reconcile_positions(deps)

    assert stuck.resolved == 1 and stuck.adopted == 0
    [position] = positions_for("SOLUSDT")
    assert position.id == pid and position.status == "active"
    assert len(live_stops(sim, "SOLUSDT")) == 1


def test_reconciliation_racing_a_live_opening_never_duplicates_it(sim, make_deps):
    deps = make_deps(intermediate_state_grace_seconds=60)
    sim.fault("algoOrder", "latency", method="POST", latency_ms=1500, count=1)
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
    outcome: list[OpenOutcome] = []
    opener = threading.Thread(target=lambda: outcome.append(open_position(deps, pid)))
    opener.start()
    raced = 0  # rounds run while the entry had filled and the stop was still in flight
    while opener.is_alive():
        on_exchange = any(p.symbol == "BTCUSDT" for p in deps.exchange.positions())
        status = positions_for("BTCUSDT")[0].status
        reconcile_positions(deps)
        raced += on_exchange and status == "pending_sl"
    opener.join()

    assert outcome == [OpenOutcome.ACTIVE] and raced >= 1
    assert [p.id for p in positions_for("BTCUSDT")] == [pid]
    assert events_of("missing_position_added") == []
    assert events_of("position_duplicate_prevented") == []
    assert len(live_stops(sim, "BTCUSDT")) == 1


def test_a_quantity_changed_by_hand_is_corrected_and_the_stop_made_to_cover_it(sim, deps):
    pid = opened(deps, "ETHUSDT")
    [before] = positions_for("ETHUSDT")
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.3"}
    )
    grown = before.quantity + Decimal("0.3")

    report = reconcile_positions(deps)

    assert report.quantities_corrected == 1
    [position] = positions_for("ETHUSDT")
    assert position.id == pid and position.quantity == grown
    [stop] = live_stops(sim, "ETHUSDT")
    assert Decimal(stop["quantity"]) == grown
    [mismatch] = events_of("quantity_mismatch_detected")
    assert Decimal(mismatch.data["db_quantity"]) == before.quantity
    assert Decimal(mismatch.data["exchange_quantity"]) == grown
    assert reconcile_positions(deps).quantities_corrected == 0


def test_a_side_mismatch_is_flagged_critical_and_nothing_is_changed(sim, deps):
    pid = opened(deps, "ETHUSDT")
    quantity = positions_for("ETHUSDT")[0].quantity
    sim.admin("POST", "/_sim/close_position", {"symbol": "ETHUSDT"})
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "SELL", "quantity": "0.2"}
    )

    report = reconcile_positions(deps)

    assert report.side_mismatches == 1 and report.phantoms_closed == 0 and report.adopted == 0
    [position] = positions_for("ETHUSDT")
    assert position.id == pid and position.status == "active" and position.quantity == quantity
    [event] = events_of("side_mismatch_detected")
    assert event.severity == "critical" and event.position_id == pid
    assert event.data["exchange_side"] == "short"


def test_a_cycle_records_its_counts(sim, deps):
    opened(deps)
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.1"}
    )

    reconcile_positions(deps)

    [started] = events_of("synchronization_started")
    [completed] = events_of("synchronization_completed")
    assert started.exchange == "binance"
    assert completed.data["exchange_positions"] == 2
    assert completed.data["db_positions"] == 1
    assert completed.data["adopted"] == 1
    assert completed.data["actions"] == {"adopt_missing": 1}


def test_a_position_its_own_stop_closed_unseen_is_settled_as_stop_triggered_not_phantom(sim, deps):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    [stop] = live_stops(sim, "BTCUSDT")
    fill = Decimal(stop["triggerPrice"]) - 100
    sim.set_price("BTCUSDT", str(fill))  # the stop fires; no ingest saw it (an outage)
    assert live_stops(sim, "BTCUSDT") == [] and sim.state()["positions"] == []

    reconcile_positions(deps)

    [position] = positions_for("BTCUSDT")
    assert position.status == "closed" and position.close_reason == "stop_triggered"
    assert position.exit_price == fill and position.realized_pnl is not None
    assert [e.position_id for e in events_of("stop_triggered")] == [pid]
    assert events_of("phantom_position_closed") == []


def test_a_quantity_one_lot_off_is_corrected_and_the_stop_made_to_cover_it(sim, deps):
    # SOLUSDT trades in whole lots (step 1): a difference of one lot is a real position
    # change, not rounding, and must not hide inside the quantity tolerance
    pid = opened(deps, "SOLUSDT")
    [before] = positions_for("SOLUSDT")
    sim.admin("POST", "/_sim/open_position", {"symbol": "SOLUSDT", "side": "BUY", "quantity": "1"})
    grown = before.quantity + 1

    report = reconcile_positions(deps)

    assert report.quantities_corrected == 1
    [position] = positions_for("SOLUSDT")
    assert position.id == pid and position.quantity == grown
    [stop] = live_stops(sim, "SOLUSDT")
    assert Decimal(stop["quantity"]) == grown
