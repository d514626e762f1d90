"""Every close path ends in one place: no trailing or aged row survives, leftovers cancelled."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import AgedPosition, Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.exchange import errors
from core.services.closing import close_position, settle_external_close
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position

pytestmark = pytest.mark.integration


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    with unit_of_work() as s:
        s.add(AgedPosition(position_id=pid, phase="grace", detected_at=datetime.now(UTC)))
    return pid


def leftovers(pid):
    with unit_of_work() as s:
        return (s.get(TrailingStop, pid), s.get(AgedPosition, pid))


def test_engine_close_flattens_records_pnl_and_cleans_everything(sim, deps):
    pid = opened(deps)
    sim.set_price("BTCUSDT", "61000")
    assert close_position(deps, pid, "aged") is True
    with unit_of_work() as s:
        p = s.get(Position, pid)
        assert p.status == "closed" and p.close_reason == "aged"
        assert p.exit_price == Decimal("61000") and p.realized_pnl > 0
    assert leftovers(pid) == (None, None)
    state = sim.state()
    assert state["positions"] == [] and state["open_algo_orders"] == []
    with unit_of_work() as s:
        [filled] = s.scalars(
            select(Event).where(Event.type == "close_order_filled", Event.position_id == pid)
        ).all()
    assert Decimal(filled.data["average_price"]) == Decimal("61000")
    assert close_position(deps, pid, "aged") is True  # idempotent


def test_stop_hit_on_the_exchange_is_settled_with_the_real_exit(sim, deps):
    pid = opened(deps, "ETHUSDT", "short")
    with unit_of_work() as s:
        stop = s.get(Position, pid).stop_price
    sim.set_price("ETHUSDT", str(stop + 10))
    sim.admin("POST", "/_sim/tick", {"count": 1})
    assert settle_external_close(deps, pid, "stop_triggered") is True
    with unit_of_work() as s:
        p = s.get(Position, pid)
        assert p.status == "closed" and p.exit_price is not None and p.realized_pnl < 0
        types = [e.type for e in s.scalars(select(Event).where(Event.position_id == pid))]
    assert "trailing_stop_removed" in types and "aged_position_removed" in types
    assert leftovers(pid) == (None, None)


def test_external_close_is_not_settled_while_the_exchange_still_has_the_position(sim, deps):
    pid = opened(deps)
    assert settle_external_close(deps, pid, "phantom") is False
    with unit_of_work() as s:
        assert s.get(Position, pid).status == "active"


def test_close_by_hand_leaves_no_stop_behind_after_settling(sim, deps):
    pid = opened(deps)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    assert len(sim.state()["open_algo_orders"]) == 1  # the venue keeps the orphan stop
    assert settle_external_close(deps, pid, "closed_externally") is True
    assert sim.state()["open_algo_orders"] == []


def test_a_failed_close_keeps_the_position_active_and_protected(sim, deps):
    pid = opened(deps)
    sim.fault("order", "http_error", method="POST", count=5)
    with pytest.raises(errors.Retryable):
        close_position(deps, pid, "manual")
    with unit_of_work() as s:
        assert s.get(Position, pid).status == "active"
    assert len(sim.state()["open_algo_orders"]) == 1


def test_zombie_sweep_runs_right_after_a_close_for_that_symbol(sim, deps):
    pid = opened(deps)
    # an order placed by hand on the same symbol: not the engine's, invisible to leftovers
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
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    assert len(sim.state()["open_algo_orders"]) == 2
    assert settle_external_close(deps, pid, "closed_externally") is True
    assert sim.state()["open_algo_orders"] == []
