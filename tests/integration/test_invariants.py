"""The invariant checker: clean on a clean system, and each kind of violation is caught."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from core.db.models import Position, TrailingStop
from core.db.session import new_session, unit_of_work
from core.domain.positions import PositionStatus, PositionTrigger
from core.services.closing import Exit, finish
from core.services.invariants import ViolationKind as K
from core.services.invariants import check_invariants
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position, transition

pytestmark = pytest.mark.integration


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def kinds(report):
    return {v.kind for v in report.violations}


def stop_of(sim, symbol="BTCUSDT"):
    [stop] = [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]
    return stop


def test_an_empty_system_is_clean(sim, deps):
    report = check_invariants(deps)
    assert report.clean, report.as_dict()


def test_open_protected_positions_are_clean(sim, deps):
    opened(deps, "BTCUSDT")
    opened(deps, "ETHUSDT", "short")
    report = check_invariants(deps)
    assert report.clean, report.as_dict()
    assert report.positions_checked == 2 and report.orders_checked == 2


def test_an_active_position_whose_stop_is_gone_is_unprotected(sim, deps):
    pid = opened(deps)
    stop = stop_of(sim)
    assert deps.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    report = check_invariants(deps)
    assert kinds(report) == {K.UNPROTECTED_POSITION}
    [v] = report.violations
    assert v.position_id == pid and "no live stop" in v.detail


def test_a_stop_smaller_than_the_position_is_unprotected(sim, deps):
    opened(deps)
    sim.admin("POST", "/_sim/open_position", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "1"})
    report = check_invariants(deps)
    assert K.UNPROTECTED_POSITION in kinds(report)
    assert K.POSITION_MISMATCH in kinds(report)  # the quantity differs from the DB's too


def test_a_second_live_stop_on_a_position_is_a_surplus(sim, deps):
    pid = opened(deps)
    qty = stop_of(sim)["quantity"]
    deps.exchange.create_stop("BTCUSDT", "sell", Decimal(qty), Decimal("50000"), "extra-1")
    report = check_invariants(deps)
    assert kinds(report) == {K.SURPLUS_STOP}
    [v] = report.violations
    assert v.position_id == pid and "2 live stops" in v.detail


def test_an_opening_stuck_past_its_grace_is_stale(sim, deps):
    with unit_of_work() as s:
        p = create_position(s, NewPosition("binance", "SOLUSDT", "long"))
        s.flush()
        s.execute(
            text("UPDATE positions SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": p.id},
        )
    report = check_invariants(deps)
    assert kinds(report) == {K.STALE_OPENING}
    assert "pending_entry" in report.violations[0].detail


def test_a_young_opening_is_not_a_violation(sim, make_deps):
    deps = make_deps(intermediate_state_grace_seconds=600)
    with unit_of_work() as s:
        create_position(s, NewPosition("binance", "SOLUSDT", "long"))
    assert check_invariants(deps).clean


def test_a_stop_left_behind_by_a_terminal_position_is_an_orphan_order(sim, deps):
    pid = opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    with unit_of_work() as s:  # the record is closed but (a bug) leftovers were not cancelled
        position = s.get(Position, pid)
        finish(
            s,
            position,
            deps.fence_token(),
            trigger=PositionTrigger.CLOSED_ON_EXCHANGE,
            reason="test",
            exit_=Exit(None, None, None),
            now=datetime.now(UTC),
        )
    report = check_invariants(deps)
    assert kinds(report) == {K.ORPHAN_ORDER}
    [v] = report.violations
    assert v.position_id == pid and v.conditional and "closed" in v.detail


def test_a_foreign_stop_on_a_symbol_without_position_is_an_orphan_order(sim, deps):
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "ETHUSDT",
            "side": "BUY",
            "type": "STOP_MARKET",
            "triggerPrice": "3300",
            "closePosition": True,
        },
    )
    report = check_invariants(deps)
    assert kinds(report) == {K.ORPHAN_ORDER}
    assert report.violations[0].position_id is None


def test_trailing_state_of_a_closed_position_is_an_orphan_row(sim, deps):
    pid = opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    deps.exchange.cancel_order("BTCUSDT", str(stop_of(sim)["algoId"]), conditional=True)
    with unit_of_work() as s:  # closed through a path that forgot finish()
        transition(s, s.get(Position, pid), PositionTrigger.CLOSED_ON_EXCHANGE, deps.fence_token())
    report = check_invariants(deps)
    assert kinds(report) == {K.ORPHAN_TRAILING}
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is not None


def test_a_status_written_without_its_event_is_reported(sim, deps):
    with unit_of_work() as s:
        p = create_position(s, NewPosition("binance", "BNBUSDT", "long"))
        s.flush()
        p.status = PositionStatus.FAILED.value  # behind transition()'s back
    report = check_invariants(deps)
    assert kinds(report) == {K.MISSING_TRANSITION_EVENT}
    assert report.violations[0].detail == "no event for pending_entry -> failed"


def test_a_position_closed_by_hand_is_a_mismatch_and_its_stop_an_orphan(sim, deps):
    pid = opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    report = check_invariants(deps)
    assert kinds(report) == {K.POSITION_MISMATCH, K.ORPHAN_ORDER}
    [mismatch] = report.of_kind(K.POSITION_MISMATCH)
    assert mismatch.position_id == pid and mismatch.detail.startswith("close_phantom")


def test_an_exchange_position_the_database_does_not_know_is_a_mismatch(sim, deps):
    sim.admin("POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "SELL", "quantity": "2"})
    report = check_invariants(deps)
    assert kinds(report) == {K.POSITION_MISMATCH}
    assert report.violations[0].detail.startswith("adopt_missing")


def test_two_open_positions_for_one_symbol_are_duplicates(sim, deps):
    session = new_session()
    try:  # the unique index forbids this state; drop it inside a transaction to build it
        session.execute(text("DROP INDEX uq_positions_one_open_per_symbol"))
        for _ in range(2):
            session.add(
                Position(
                    exchange="binance",
                    symbol="SOLUSDT",
                    side="long",
                    status="pending_entry",
                    quantity=Decimal(0),
                    correlation_id="dup",
                )
            )
        session.flush()
        report = check_invariants(deps, session=session, now=datetime.now(UTC))
    finally:
        session.rollback()
        session.close()
    assert K.DUPLICATE_POSITION in kinds(report)
    [dup] = report.of_kind(K.DUPLICATE_POSITION)
    assert dup.symbol == "SOLUSDT" and "2 non-terminal positions" in dup.detail


def test_an_unreachable_exchange_makes_the_report_incomplete(sim, deps):
    sim.fault("positionRisk", "http_error", count=3)
    report = check_invariants(deps)
    assert not report.clean and report.errors
    assert "exchange unreachable" in report.errors[0]


def test_an_active_position_does_not_become_a_violation_with_time(sim, deps):
    pid = opened(deps)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert check_invariants(deps, now=later).clean
    with unit_of_work() as s:
        assert s.get(Position, pid).status == "active"
