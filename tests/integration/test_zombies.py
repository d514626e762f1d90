"""Zombie orders on the paper exchange: orders without a position are cancelled through the
right endpoint, live protection and busy symbols are never touched, a dry run cancels
nothing."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import Event
from core.db.session import unit_of_work
from core.domain.positions import PositionStatus
from core.locks import symbol_lock
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.zombies import cleanup_zombies

pytestmark = pytest.mark.integration


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def by_hand(sim, **order):
    return sim.admin("POST", "/_sim/order", order)


def orphans(sim):
    """A reduce-only limit and a stop left on ETHUSDT after its position was closed by hand."""
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.5"}
    )
    by_hand(
        sim,
        symbol="ETHUSDT",
        side="SELL",
        type="LIMIT",
        price="4000",
        quantity="0.5",
        reduceOnly=True,
    )
    by_hand(
        sim,
        symbol="ETHUSDT",
        side="SELL",
        type="STOP_MARKET",
        triggerPrice="2500",
        quantity="0.5",
        reduceOnly=True,
    )
    sim.admin("POST", "/_sim/close_position", {"symbol": "ETHUSDT"})
    state = sim.state()
    assert len(state["open_orders"]) == 1 and len(state["open_algo_orders"]) == 1


def open_counts(sim, symbol=None):
    state = sim.state()
    regular = [o for o in state["open_orders"] if symbol in (None, o["symbol"])]
    algo = [o for o in state["open_algo_orders"] if symbol in (None, o["symbol"])]
    return len(regular), len(algo)


def events_of(event_type):
    with unit_of_work() as s:
        return s.scalars(select(Event).where(Event.type == event_type).order_by(Event.id)).all()


def test_orders_left_without_a_position_are_cancelled_through_the_right_endpoint(sim, deps):
    orphans(sim)
    before = sim.requests()["next"]

    report = cleanup_zombies(deps)

    assert report.detected == 2 and report.cancelled == 2 and report.failed == 0
    assert report.by_reason == {"no_position": 2}
    assert open_counts(sim) == (0, 0)
    deletes = sorted(r["path"] for r in sim.requests(before)["requests"] if r["method"] == "DELETE")
    assert deletes == ["/fapi/v1/algoOrder", "/fapi/v1/order"]
    [detected] = events_of("zombie_orders_detected")
    assert detected.data["count"] == 2 and detected.data["dry_run"] is False
    assert len(events_of("zombie_order_cancelled")) == 2
    [completed] = events_of("zombie_cleanup_completed")
    assert completed.data["cancelled"] == 2
    assert cleanup_zombies(deps).detected == 0


def test_a_dry_run_reports_the_zombies_and_cancels_nothing(sim, deps):
    orphans(sim)
    before = sim.requests()["next"]

    report = cleanup_zombies(deps, dry_run=True)

    assert report.detected == 2 and report.cancelled == 0
    assert {z["reason"] for z in report.zombies} == {"no_position"}
    assert open_counts(sim) == (1, 1)
    assert all(r["method"] == "GET" for r in sim.requests(before)["requests"])
    [detected] = events_of("zombie_orders_detected")
    assert detected.data["dry_run"] is True
    assert events_of("zombie_order_cancelled") == []


def test_a_live_positions_own_stop_is_kept_and_a_second_stop_cancelled(sim, deps):
    opened(deps)
    [engine_stop] = sim.state()["open_algo_orders"]
    by_hand(
        sim,
        symbol="BTCUSDT",
        side="SELL",
        type="STOP_MARKET",
        triggerPrice="55000",
        quantity="0.001",
        reduceOnly=True,
    )

    report = cleanup_zombies(deps)

    assert report.by_reason == {"surplus_stop": 1} and report.cancelled == 1
    [kept] = sim.state()["open_algo_orders"]
    assert kept["clientAlgoId"] == engine_stop["clientAlgoId"]


def test_orders_on_a_symbol_with_an_opening_in_flight_are_never_judged(sim, deps):
    with unit_of_work() as s:
        create_position(
            s,
            NewPosition(
                "binance",
                "ETHUSDT",
                "long",
                status=PositionStatus.PENDING_SL,
                quantity=Decimal("0.5"),
                entry_price=Decimal("3000"),
            ),
        )
    orphans(sim)

    report = cleanup_zombies(deps)

    assert report.detected == 0 and open_counts(sim) == (1, 1)


def test_a_plain_entry_order_without_position_is_a_zombie_only_once_it_is_stale(sim, make_deps):
    by_hand(sim, symbol="BTCUSDT", side="BUY", type="LIMIT", price="50000", quantity="0.01")
    deps = make_deps()

    assert cleanup_zombies(deps).detected == 0

    deps.clock = ManualClock(datetime.now(UTC) + timedelta(minutes=20))
    report = cleanup_zombies(deps)
    assert report.by_reason == {"stale_entry": 1} and report.cancelled == 1
    assert open_counts(sim) == (0, 0)


def test_a_retryable_cancel_error_is_retried_with_backoff(sim, deps):
    orphans(sim)
    sim.fault("algoOrder", "http_error", method="DELETE", count=1)
    waits: list[float] = []

    report = cleanup_zombies(deps, sleep=waits.append)

    assert report.cancelled == 2 and report.failed == 0
    assert waits == [0.2]
    assert open_counts(sim) == (0, 0)


def test_a_cancel_that_keeps_failing_is_recorded_and_left_for_the_next_cycle(sim, deps):
    orphans(sim)
    sim.fault("algoOrder", "http_error", method="DELETE", count=10)

    report = cleanup_zombies(deps, sleep=lambda _: None)

    assert report.cancelled == 1 and report.failed == 1
    [failed] = events_of("zombie_order_cancel_failed")
    assert failed.severity == "error" and failed.data["attempts"] == 3
    assert open_counts(sim) == (0, 1)


def test_more_zombies_than_the_threshold_raise_a_critical_alert(sim, make_deps):
    orphans(sim)
    deps = make_deps(zombie_alert_threshold=1)

    cleanup_zombies(deps, dry_run=True)

    [alert] = events_of("zombie_alert_triggered")
    assert alert.severity == "critical" and alert.data["count"] == 2


def test_a_symbol_busy_under_its_lock_is_left_to_the_next_cycle(sim, make_deps, redis_client):
    orphans(sim)
    deps = make_deps(guardian_lock_wait_seconds=0.2)
    held = threading.Event()
    release = threading.Event()

    def hold_lock():
        with symbol_lock(redis_client, "binance", "ETHUSDT", token_source=deps.fence_token):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(10)
    try:
        report = cleanup_zombies(deps)
    finally:
        release.set()
        holder.join()

    assert report.detected == 2 and report.deferred == 2 and report.cancelled == 0
    assert open_counts(sim) == (1, 1)


def test_a_cleanup_limited_to_symbols_touches_nothing_else(sim, deps):
    orphans(sim)
    by_hand(
        sim,
        symbol="BTCUSDT",
        side="BUY",
        type="STOP_MARKET",
        triggerPrice="70000",
        quantity="0.01",
        reduceOnly=True,
    )

    report = cleanup_zombies(deps, symbols={"BTCUSDT"})

    assert report.detected == 1 and report.cancelled == 1
    assert open_counts(sim, "ETHUSDT") == (1, 1) and open_counts(sim, "BTCUSDT") == (0, 0)


def test_a_phantoms_stop_is_left_for_reconciliation_to_settle(sim, deps):
    opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})

    report = cleanup_zombies(deps)

    # the DB still says open: an empty positions reading must not strip the stop
    assert report.detected == 0 and open_counts(sim, "BTCUSDT") == (0, 1)
