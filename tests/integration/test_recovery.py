"""Interrupted openings are resolved against the exchange; a killed worker leaves nothing
unprotected."""

import os
import signal
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from core.db.models import Position
from core.db.session import unit_of_work
from core.domain.positions import PositionStatus
from core.exchange.client_ids import client_order_id
from core.locks import symbol_lock
from core.services.positions import NewPosition, create_position
from core.services.recovery import recover_interrupted
from tests.fixtures.processes import Processes, stop_process

pytestmark = pytest.mark.integration


def put_position(status: str, symbol: str = "BTCUSDT", **values) -> Position:
    with unit_of_work() as s:
        position = create_position(
            s, NewPosition("binance", symbol, "long", status=PositionStatus.PENDING_ENTRY)
        )
        position.status = status
        for k, v in values.items():
            setattr(position, k, v)
        s.flush()
        return position


def status_of(pid: int) -> str:
    with unit_of_work() as s:
        return s.get(Position, pid).status


def open_stops(sim, symbol="BTCUSDT"):
    return [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]


def test_pending_entry_never_sent_is_failed_not_sent_late(sim, deps):
    p = put_position("pending_entry")
    report = recover_interrupted(deps, min_age_seconds=0)
    assert report.examined == 1
    assert status_of(p.id) == "failed"
    assert sim.state()["positions"] == []


def test_entry_that_reached_the_exchange_gets_its_stop(sim, deps):
    p = put_position("entry_placed", requested_quantity=Decimal("0.01"))
    deps.exchange.create_market_order(
        "BTCUSDT", "buy", Decimal("0.01"), client_order_id(p.id, p.correlation_id, "entry")
    )
    recover_interrupted(deps, min_age_seconds=0)
    assert status_of(p.id) == "active"
    [stop] = open_stops(sim)
    assert Decimal(stop["quantity"]) == Decimal("0.01")


def test_entry_that_never_reached_the_exchange_is_failed(sim, deps):
    p = put_position("entry_placed", requested_quantity=Decimal("0.01"))
    recover_interrupted(deps, min_age_seconds=0)
    assert status_of(p.id) == "failed"


def test_filled_position_without_stop_is_protected(sim, deps):
    deps.exchange.create_market_order("ETHUSDT", "buy", Decimal("0.1"), "manual-1")
    p = put_position(
        "pending_sl", symbol="ETHUSDT", quantity=Decimal("0.1"), entry_price=Decimal("3000")
    )
    recover_interrupted(deps, min_age_seconds=0)
    assert status_of(p.id) == "active"
    assert len(open_stops(sim, "ETHUSDT")) == 1


def test_young_interrupted_positions_are_left_to_their_task(sim, deps):
    put_position("pending_entry", requested_quantity=Decimal("0.01"))
    assert recover_interrupted(deps, min_age_seconds=3600).examined == 0


def _backdate(pid: int, seconds: float) -> None:
    with unit_of_work() as s:
        s.execute(
            update(Position)
            .where(Position.id == pid)
            .values(updated_at=func.now() - timedelta(seconds=seconds))
        )


def test_exposed_opening_whose_lock_is_held_is_left_to_its_holder(sim, deps):
    deps.exchange.create_market_order("ETHUSDT", "buy", Decimal("0.1"), "manual-2")
    p = put_position(
        "pending_sl", symbol="ETHUSDT", quantity=Decimal("0.1"), entry_price=Decimal("3000")
    )
    _backdate(p.id, 60)
    with symbol_lock(deps.redis, "binance", "ETHUSDT", token_source=deps.fence_token):
        assert recover_interrupted(deps, min_age_seconds=3600).examined == 0
    assert status_of(p.id) == "pending_sl"


def test_exposed_opening_nobody_drives_is_taken_over_before_the_grace(sim, deps):
    """A filled entry without a stop whose worker died: recovery takes it as soon as the
    lock is free, not after the whole grace period."""
    deps.exchange.create_market_order("ETHUSDT", "buy", Decimal("0.1"), "manual-3")
    p = put_position(
        "pending_sl", symbol="ETHUSDT", quantity=Decimal("0.1"), entry_price=Decimal("3000")
    )
    _backdate(p.id, deps.settings.intermediate_state_takeover_seconds + 1)
    report = recover_interrupted(deps, min_age_seconds=3600)
    assert report.examined == 1
    assert status_of(p.id) == "active"
    assert len(open_stops(sim, "ETHUSDT")) == 1


@pytest.fixture
def worker_env(sim, clean_db, redis_url, tmp_path):
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_POSITION_SIZE_USDT="200",
        VIGIL_ENTRY_FILL_TIMEOUT="2",
        VIGIL_EXCHANGE_TIMEOUT_MS="20000",
        VIGIL_LOCK_TIMEOUT="5",
    )
    return env


def test_worker_killed_between_entry_and_stop_leaves_the_position_protected(sim, deps, worker_env):
    sim.fault("algoOrder", "latency", method="POST", latency_ms=3000, count=1)
    with Processes(worker_env, stop_signal=signal.SIGKILL) as processes:
        worker = processes.worker(
            *("--queues", "orders,maintenance", "--concurrency", "1", "--name", "victim")
        )
        with unit_of_work() as s:
            pid = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
        from core.config import get_settings
        from tasks.app import create_app

        create_app(get_settings()).send_task("vigil.orders.open_position", args=[pid])
        deadline = time.monotonic() + 60
        while status_of(pid) != "pending_sl":
            assert time.monotonic() < deadline, f"never reached pending_sl: {status_of(pid)}"
            time.sleep(0.05)
        time.sleep(0.3)  # the stop request is in flight now
        stop_process(worker, signal.SIGKILL)
    assert status_of(pid) == "pending_sl"
    recover_interrupted(deps, min_age_seconds=0)
    assert status_of(pid) == "active"
    time.sleep(3.5)  # let the delayed request that died with the worker land (or not)
    stops = open_stops(sim)
    assert len(stops) == 1, stops
    [exchange_position] = [p for p in sim.state()["positions"] if p["symbol"] == "BTCUSDT"]
    assert Decimal(stops[0]["quantity"]) == Decimal(exchange_position["positionAmt"])
    with unit_of_work() as s:
        assert s.scalars(select(Position)).one().status == "active"
