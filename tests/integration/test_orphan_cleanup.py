"""No close path leaves trailing or aged state behind; the cleanup removes what a bug would.

One test per close path (engine close, stop triggered on the exchange, closed by hand,
rollback in the opener, aged close): each ends with no trailing row, no aged row and, after
the beat's aged pass, no band component, so the orphan cleanup that follows finds nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import AgedPosition, Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.domain.trailing import PriceWindow
from core.exchange.errors import Retryable
from core.services import aged, bands
from core.services.aged import run_aged_cycle
from core.services.closing import close_position, lock_for, settle_external_close
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.orphans import clean_orphans
from core.services.positions import NewPosition, create_position
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def deps(make_deps, clock) -> Deps:
    return dataclasses.replace(make_deps(), clock=clock)


def aged_active(deps: Deps, clock: ManualClock, symbol: str = "BTCUSDT", side: str = "long"):
    """An active position with its stop, trailing row, aged row and published aged band."""
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    clock.advance(hours=4)
    run_aged_cycle(deps)
    assert_state(deps, pid, symbol, trailing=True, aged=True, band=True)
    return pid


def assert_state(deps: Deps, pid: int, symbol: str, *, trailing: bool, aged: bool, band: bool):
    with unit_of_work() as s:
        assert (s.get(TrailingStop, pid) is not None) is trailing
        assert (s.get(AgedPosition, pid) is not None) is aged
    assert ("aged" in bands.components(deps.redis, "binance", symbol)) is band


def status_of(pid: int) -> str:
    with unit_of_work() as s:
        return s.get(Position, pid).status


def assert_nothing_survives(deps: Deps, pid: int, symbol: str) -> None:
    """After the close: no rows at once; no band after the beat's pass; cleanup finds 0."""
    assert PositionStatus(status_of(pid)) in (PositionStatus.CLOSED, PositionStatus.ROLLED_BACK)
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is None
        assert s.get(AgedPosition, pid) is None
    run_aged_cycle(deps)
    assert bands.tracked_symbols(deps.redis, "binance") == []
    report = clean_orphans(deps)
    assert report.found == 0
    with unit_of_work() as s:
        [event] = s.scalars(select(Event).where(Event.type == "orphan_state_cleaned"))
    assert event.severity == "info" and event.data["trailing_rows"] == 0


def test_engine_close_leaves_no_orphan_state(sim, deps, clock):
    pid = aged_active(deps, clock)
    assert close_position(deps, pid, "manual") is True
    assert_nothing_survives(deps, pid, "BTCUSDT")


def settled_directly(deps: Deps, pid: int) -> None:
    assert settle_external_close(deps, pid, "closed_externally") is True


def settled_from_the_stop_fill_stream(deps: Deps, pid: int) -> None:
    from core.services.trailing import settle_stop_triggered

    assert settle_stop_triggered(deps, pid) is True


def settled_by_reconciliation_as_a_phantom(deps: Deps, pid: int) -> None:
    from core.services.reconciliation import reconcile_positions

    reconcile_positions(deps)
    assert status_of(pid) == "closed"


SETTLERS = [
    settled_directly,
    settled_from_the_stop_fill_stream,
    settled_by_reconciliation_as_a_phantom,
]


@pytest.mark.parametrize("settle", SETTLERS, ids=lambda f: f.__name__)
def test_stop_triggered_on_the_exchange_leaves_no_orphan_state(sim, deps, clock, settle):
    pid = aged_active(deps, clock, "ETHUSDT", "short")
    with unit_of_work() as s:
        stop = s.get(Position, pid).stop_price
    sim.set_price("ETHUSDT", str(stop + 1))
    sim.admin("POST", "/_sim/tick", {"count": 1})
    assert sim.state()["positions"] == []
    settle(deps, pid)
    assert_nothing_survives(deps, pid, "ETHUSDT")


@pytest.mark.parametrize("settle", SETTLERS, ids=lambda f: f.__name__)
def test_close_by_hand_leaves_no_orphan_state(sim, deps, clock, settle):
    pid = aged_active(deps, clock)
    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})
    settle(deps, pid)
    assert_nothing_survives(deps, pid, "BTCUSDT")


def test_rollback_in_the_opener_leaves_no_orphan_state(sim, deps, clock):
    # an adopted position waiting for its stop, with state a previous life left behind
    deps.exchange.create_market_order("BTCUSDT", "buy", Decimal("0.01"), "manual-adopted-1")
    with unit_of_work() as s:
        position = create_position(
            s,
            NewPosition(
                "binance",
                "BTCUSDT",
                "long",
                status=PositionStatus.PENDING_SL,
                quantity=Decimal("0.01"),
                entry_price=Decimal("60000"),
            ),
        )
        pid = position.id
        s.add(TrailingStop(position_id=pid, state="inactive", owner="trailing"))
        s.add(AgedPosition(position_id=pid, phase="grace", detected_at=clock.now()))
    bands.publish(deps.redis, "binance", "BTCUSDT", "aged", PriceBand(None, Decimal("60060")))
    sim.fault("algoOrder", "http_error", method="POST", count=10)
    assert open_position(deps, pid) is OpenOutcome.ROLLED_BACK
    assert sim.state()["positions"] == []
    assert_nothing_survives(deps, pid, "BTCUSDT")


def test_aged_close_leaves_no_orphan_state_and_removes_its_band_at_once(sim, deps, clock):
    pid = aged_active(deps, clock)
    sim.set_price("BTCUSDT", "60060")
    with unit_of_work() as s:
        position = s.get(Position, pid)
    with lock_for(deps, "binance", "BTCUSDT") as held:
        aged.react(deps, held, position, PriceWindow.at(Decimal("60060")), clock.now())
    assert_state(deps, pid, "BTCUSDT", trailing=False, aged=False, band=False)
    assert_nothing_survives(deps, pid, "BTCUSDT")


def test_a_failed_engine_close_keeps_the_state_of_the_still_open_position(sim, deps, clock):
    pid = aged_active(deps, clock)
    sim.fault("order", "http_error", method="POST", count=1)
    with pytest.raises(Retryable):
        close_position(deps, pid, "manual")
    assert clean_orphans(deps).found == 0
    assert_state(deps, pid, "BTCUSDT", trailing=True, aged=True, band=True)


def plant_orphans(deps: Deps) -> tuple[int, int]:
    """A closed position still carrying trailing/aged rows and a band; and a live one."""
    with unit_of_work() as s:
        dead = Position(
            exchange="binance",
            symbol="DOGEUSDT",
            side="long",
            status="closed",
            quantity=Decimal("100"),
            correlation_id="dead",
        )
        live = Position(
            exchange="binance",
            symbol="SOLUSDT",
            side="long",
            status="active",
            quantity=Decimal("1"),
            entry_price=Decimal("150"),
            correlation_id="live",
        )
        s.add_all([dead, live])
        s.flush()
        for p in (dead, live):
            s.add(TrailingStop(position_id=p.id, state="active", owner="trailing"))
            s.add(AgedPosition(position_id=p.id, phase="grace", detected_at=datetime.now(UTC)))
        ids = dead.id, live.id
    for symbol in ("DOGEUSDT", "SOLUSDT"):
        bands.publish(deps.redis, "binance", symbol, "trailing", PriceBand(None, Decimal("1")))
    return ids


def cleanup_events() -> list[Event]:
    with unit_of_work() as s:
        return list(
            s.scalars(select(Event).where(Event.type == "orphan_state_cleaned").order_by(Event.id))
        )


def test_orphan_rows_and_bands_are_reported_by_a_dry_run_and_removed_for_real(sim, deps):
    dead, live = plant_orphans(deps)
    report = clean_orphans(deps, dry_run=True)
    assert (report.trailing, report.aged, report.bands) == ([dead], [dead], ["DOGEUSDT"])
    with unit_of_work() as s:
        assert s.get(TrailingStop, dead) is not None and s.get(AgedPosition, dead) is not None
    assert bands.tracked_symbols(deps.redis, "binance") == ["DOGEUSDT", "SOLUSDT"]

    report = clean_orphans(deps)
    assert (report.trailing, report.aged, report.bands) == ([dead], [dead], ["DOGEUSDT"])
    with unit_of_work() as s:
        assert s.get(TrailingStop, dead) is None and s.get(AgedPosition, dead) is None
        assert s.get(TrailingStop, live) is not None and s.get(AgedPosition, live) is not None
    assert bands.tracked_symbols(deps.redis, "binance") == ["SOLUSDT"]

    dry, real = cleanup_events()
    assert dry.data["dry_run"] is True and dry.severity == "info"
    assert real.severity == "warning"
    assert (real.data["trailing_rows"], real.data["aged_rows"], real.data["bands"]) == (1, 1, 1)
    assert real.data["position_ids"] == [dead]
    assert clean_orphans(deps).found == 0


def test_a_band_of_a_symbol_whose_opening_is_in_progress_is_not_an_orphan(sim, deps):
    with unit_of_work() as s:
        create_position(s, NewPosition("binance", "ADAUSDT", "long"))
    bands.publish(deps.redis, "binance", "ADAUSDT", "trailing", PriceBand.empty())
    assert clean_orphans(deps).bands == []
    assert bands.tracked_symbols(deps.redis, "binance") == ["ADAUSDT"]


def test_tasks_are_registered_on_the_maintenance_queue_and_scheduled(redis_url):
    from beat_schedule import build_schedule
    from core.config import load_settings
    from tasks.app import app

    app.loader.import_default_modules()  # what a worker imports: TASK_MODULES
    settings = load_settings(aged_interval=45, orphan_cleanup_interval=1800)
    schedule = build_schedule(settings)
    assert schedule["aged-positions"]["task"] == "vigil.maintenance.aged_positions"
    assert schedule["aged-positions"]["schedule"] == 45
    assert schedule["orphan-cleanup"]["task"] == "vigil.maintenance.orphan_cleanup"
    assert schedule["orphan-cleanup"]["schedule"] == 1800
    for name in ("vigil.maintenance.aged_positions", "vigil.maintenance.orphan_cleanup"):
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "maintenance"


@pytest.fixture
def worker(sim, clean_db, redis_url, tmp_path):
    env = dict(os.environ, VIGIL_HOME=str(tmp_path), VIGIL_EXCHANGE_URL=sim.url)
    with Processes(env) as processes:
        yield lambda: processes.worker("--pool", "solo", "--name", "orphans")


def test_a_starting_worker_cleans_orphans_left_by_an_earlier_life(deps, worker):
    dead, _ = plant_orphans(deps)
    worker()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not cleanup_events():
        time.sleep(0.2)
    [event] = cleanup_events()
    assert event.data["trailing_rows"] == 1 and event.data["dry_run"] is False
    with unit_of_work() as s:
        assert s.get(TrailingStop, dead) is None and s.get(AgedPosition, dead) is None
