"""Aged positions end to end on the paper exchange, with the clock moved by hand.

The phase arithmetic is unit-tested in tests/unit/test_domain_aged.py; these tests prove the
wiring: detection on beat, every phase change stored, the band published, the close fired by
the price reaction at market through the single close path, retries, and restart.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import (
    AgedPosition,
    AgedPositionTransition,
    Event,
    Order,
    Position,
    TrailingStop,
)
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.domain.trailing import PriceWindow
from core.services import aged, bands
from core.services.aged import AgedOutcome, run_aged_cycle
from core.services.closing import lock_for
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position

pytestmark = pytest.mark.integration

HOURS = timedelta(hours=1)


@pytest.fixture
def clock() -> ManualClock:
    # real time, so the exchange's fill timestamps are not before the position's open time
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def timed(make_deps, clock):
    """Deps on the paper exchange whose clock the test moves."""

    def make(**overrides) -> Deps:
        return dataclasses.replace(make_deps(**overrides), clock=clock)

    return make


def open_active(deps: Deps, symbol: str = "BTCUSDT", side: str = "long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition("binance", symbol, side))
        assert position is not None
        pid = position.id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def at_hours(clock: ManualClock, start: datetime, hours: float) -> None:
    clock.advance(seconds=(start + timedelta(hours=hours) - clock.now()).total_seconds())


def position(pid: int) -> Position:
    with unit_of_work() as s:
        found = s.get(Position, pid)
        assert found is not None
        return found


def aged_row(pid: int) -> AgedPosition | None:
    with unit_of_work() as s:
        return s.get(AgedPosition, pid)


def transitions(pid: int) -> list[AgedPositionTransition]:
    with unit_of_work() as s:
        return list(
            s.scalars(
                select(AgedPositionTransition)
                .where(AgedPositionTransition.position_id == pid)
                .order_by(AgedPositionTransition.id)
            )
        )


def phases(pid: int) -> list[tuple[str | None, str]]:
    return [(t.from_phase, t.to_phase) for t in transitions(pid)]


def events(pid: int, *types: str) -> list[Event]:
    with unit_of_work() as s:
        query = select(Event).where(Event.position_id == pid).order_by(Event.id)
        if types:
            query = query.where(Event.type.in_(types))
        return list(s.scalars(query))


def aged_band(deps: Deps, symbol: str) -> PriceBand | None:
    return bands.components(deps.redis, "binance", symbol).get("aged")


def price_tick(sim, deps: Deps, pid: int, price: str) -> AgedOutcome:
    """The price path for one tick: the sim moves, a price task reacts under the lock."""
    sim.set_price(position(pid).symbol, price)
    held_position = position(pid)
    mark = deps.exchange.mark_price(held_position.symbol)
    with lock_for(deps, "binance", held_position.symbol) as held:
        aged.react(deps, held, held_position, PriceWindow.at(mark), deps.clock.now())
    row = aged_row(pid)
    if position(pid).status == "closed":
        return AgedOutcome.CLOSED
    return AgedOutcome.WAITING if row is not None else AgedOutcome.NOT_AGED


def test_young_position_is_left_alone_and_an_old_one_enters_grace_with_a_band(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 2.99)
    assert run_aged_cycle(deps).examined == 0
    assert aged_row(pid) is None and events(pid, "aged_position_detected") == []

    at_hours(clock, start, 3.5)
    report = run_aged_cycle(deps)
    assert report.outcomes == {"waiting": 1}
    row = aged_row(pid)
    assert row is not None and row.phase == "grace"
    assert row.target_price == Decimal("60060")  # 60000 * (1 + 2 * 0.05 %)
    assert phases(pid) == [("not_aged", "grace")]
    assert [e.type for e in events(pid, "aged_position_detected", "aged_phase_changed")] == [
        "aged_position_detected",
        "aged_phase_changed",
    ]
    assert aged_band(deps, "BTCUSDT") == PriceBand(
        None, Decimal("60060"), clock.now() + 2 * timedelta(seconds=deps.settings.aged_interval)
    )
    assert position(pid).status == "active"


def test_profitable_aged_position_is_closed_at_market_at_once(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    sim.set_price("BTCUSDT", "60600")  # +1 %: net profit, below trailing activation
    at_hours(clock, start, 3.1)
    assert run_aged_cycle(deps).outcomes == {"closed": 1}
    closed = position(pid)
    assert closed.status == "closed" and closed.close_reason == "aged"
    assert closed.exit_price == Decimal("60600") and closed.realized_pnl > 0
    [trigger] = events(pid, "aged_close_triggered")
    assert trigger.data["close_reason"] == "profit" and trigger.data["attempt"] == 1
    assert aged_row(pid) is None and aged_band(deps, "BTCUSDT") is None
    assert sim.state()["positions"] == [] and sim.state()["open_algo_orders"] == []


def test_grace_target_is_breakeven_plus_two_commissions_and_the_price_path_closes_there(
    sim, timed, clock
):
    deps = timed()
    start = clock.now()
    pid = open_active(deps, "ETHUSDT", "short")
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    row = aged_row(pid)
    assert row is not None and row.phase == "grace" and row.target_price == Decimal("2997")
    assert aged_band(deps, "ETHUSDT").low == Decimal("2997")  # short: closes at or below

    assert price_tick(sim, deps, pid, "2997.5") is AgedOutcome.WAITING
    assert price_tick(sim, deps, pid, "2997") is AgedOutcome.CLOSED
    closed = position(pid)
    assert closed.exit_price == Decimal("2997") and closed.close_reason == "aged"
    [trigger] = events(pid, "aged_close_triggered")
    assert trigger.data["source"] == "price" and trigger.data["close_reason"] == "profit"
    with unit_of_work() as s:
        orders = {(o.purpose, o.order_type, o.reduce_only) for o in s.scalars(select(Order))}
    # a reduce-only MARKET close, and no resting limit order ever (seeds/002)
    assert orders == {
        ("entry", "market", False),
        ("stop", "stop_market", True),
        ("close", "market", True),
    }
    assert aged_band(deps, "ETHUSDT") is None


def test_progressive_loss_grows_with_time_and_the_close_fires_at_the_moving_target(
    sim, timed, clock
):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    sim.set_price("BTCUSDT", "59580")  # -0.7 %, above the 2 % stop
    at_hours(clock, start, 12)  # 1 h after grace: accepted loss 0.5 %
    run_aged_cycle(deps)
    row = aged_row(pid)
    assert row.phase == "progressive" and row.target_price == Decimal("59700")
    assert row.accepted_loss_percent == Decimal("0.5")
    assert phases(pid) == [("not_aged", "grace"), ("grace", "progressive")]
    band = aged_band(deps, "BTCUSDT")
    assert band.high is not None and Decimal("59580") < band.high <= Decimal("59700")

    assert price_tick(sim, deps, pid, "59580") is AgedOutcome.WAITING
    at_hours(clock, start, 13)  # accepted loss 1.0 %: target 59400, the mark is above it
    assert price_tick(sim, deps, pid, "59580") is AgedOutcome.CLOSED
    [update] = events(pid, "aged_target_updated")
    assert Decimal(update.data["new_target"]) == Decimal("59400")
    [trigger] = events(pid, "aged_close_triggered")
    assert trigger.data["close_reason"] == "target_reached"
    assert position(pid).exit_price == Decimal("59580")


def test_past_the_loss_cap_the_position_is_closed_at_market_and_every_phase_is_stored(
    sim, timed, clock
):
    deps = timed(stop_loss_percent="15")  # a stop wider than the aged cap
    start = clock.now()
    pid = open_active(deps)
    sim.set_price("BTCUSDT", "52800")  # -12 %: no progressive target is ever reached
    for hours in (4, 12, 22):
        at_hours(clock, start, hours)
        assert run_aged_cycle(deps).outcomes == {"waiting": 1}
    assert aged_row(pid).accepted_loss_percent == Decimal("6.6")  # 11 h x 0.5 % x 1.2
    at_hours(clock, start, 28)  # past 27 h 40 min the accepted loss exceeds 10 %
    assert run_aged_cycle(deps).outcomes == {"closed": 1}
    assert phases(pid) == [
        ("not_aged", "grace"),
        ("grace", "progressive"),
        ("progressive", "emergency"),
    ]
    history = transitions(pid)
    assert [t.mark_price for t in history] == [Decimal("52800")] * 3
    assert history[-1].target_price is None and history[-1].accepted_loss_percent > 10
    [trigger] = events(pid, "aged_close_triggered")
    assert trigger.data["close_reason"] == "max_loss_exceeded"
    closed = position(pid)
    assert closed.status == "closed" and closed.realized_pnl < 0
    assert sim.state()["positions"] == []


def test_position_with_an_active_trailing_stop_is_never_aged(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    with unit_of_work() as s:
        s.get(TrailingStop, pid).state = "active"
    at_hours(clock, start, 30)
    assert run_aged_cycle(deps).examined == 0
    assert aged_row(pid) is None and transitions(pid) == []
    assert events(pid, "aged_position_detected", "aged_close_triggered") == []
    assert position(pid).status == "active"


def test_trailing_that_activates_after_ageing_takes_over_and_the_aged_state_goes(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    with unit_of_work() as s:
        s.get(TrailingStop, pid).state = "active"
    at_hours(clock, start, 4.1)
    assert run_aged_cycle(deps).outcomes == {"released": 1}
    assert aged_row(pid) is None and aged_band(deps, "BTCUSDT") is None
    assert phases(pid) == [("not_aged", "grace"), ("grace", "not_aged")]
    assert len(events(pid, "aged_position_removed")) == 1
    assert position(pid).status == "active"


def test_restart_with_no_memory_resumes_in_the_same_phase(sim, timed, make_deps, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    deps.redis.flushall()  # bands are derived state: losing them must not matter

    later = ManualClock(start + timedelta(hours=5))
    restarted = dataclasses.replace(make_deps(), clock=later)
    assert run_aged_cycle(restarted).outcomes == {"waiting": 1}
    assert phases(pid) == [("not_aged", "grace")]
    assert len(events(pid, "aged_position_detected")) == 1
    assert aged_band(restarted, "BTCUSDT").high == Decimal("60060")

    sim.set_price("BTCUSDT", "59500")  # below the first progressive target (59700)
    at_hours(later, start, 12)
    assert run_aged_cycle(restarted).outcomes == {"waiting": 1}
    assert phases(pid) == [("not_aged", "grace"), ("grace", "progressive")]
    assert aged_row(pid).detected_at == start + timedelta(hours=4)


def test_a_failed_close_is_counted_backed_off_retried_and_alerted(sim, timed, clock):
    deps = timed(aged_close_retry_seconds=5, aged_close_alert_attempts=2)
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    sim.fault("order", "http_error", method="POST", count=2)

    assert price_tick(sim, deps, pid, "60060") is AgedOutcome.WAITING  # close failed
    row = aged_row(pid)
    assert row.close_attempts == 1 and row.last_close_error
    assert position(pid).status == "active"
    assert len(sim.state()["open_algo_orders"]) == 1  # still protected by its stop
    assert aged_band(deps, "BTCUSDT") == PriceBand(None, None, clock.now() + timedelta(seconds=5))

    price_tick(sim, deps, pid, "60060")  # inside the backoff: no attempt
    assert aged_row(pid).close_attempts == 1
    clock.advance(seconds=5)
    assert price_tick(sim, deps, pid, "60060") is AgedOutcome.WAITING  # second failure
    assert aged_row(pid).close_attempts == 2
    assert [e.type for e in events(pid, "critical_error")] == ["critical_error"]
    clock.advance(seconds=9)  # the backoff doubled to 10 s
    price_tick(sim, deps, pid, "60060")
    assert aged_row(pid).close_attempts == 2
    clock.advance(seconds=1)
    assert price_tick(sim, deps, pid, "60060") is AgedOutcome.CLOSED

    attempts = [e.data["attempt"] for e in events(pid, "aged_close_triggered")]
    failures = [e.data["attempt"] for e in events(pid, "aged_close_failed")]
    assert attempts == [1, 2, 3] and failures == [1, 2]
    assert position(pid).status == "closed" and aged_row(pid) is None


def test_an_interrupted_aged_close_is_finished_by_the_next_cycle(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    with unit_of_work() as s:  # the worker died right after asking to close
        p = s.get(Position, pid)
        p.status, p.close_reason = "closing", "aged"
    at_hours(clock, start, 4.1)
    assert run_aged_cycle(deps).outcomes == {"closed": 1}
    assert position(pid).status == "closed"
    assert sim.state()["positions"] == []


def test_one_cycle_reads_all_mark_prices_in_one_call(sim, timed, clock):
    deps = timed()
    start = clock.now()
    pids = [open_active(deps, symbol) for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    at_hours(clock, start, 4)
    since = sim.requests()["next"]
    assert run_aged_cycle(deps).outcomes == {"waiting": 3}
    paths = [r["path"] for r in sim.requests(since)["requests"]]
    assert paths.count("/fapi/v1/premiumIndex") == 1
    assert all(aged_row(pid).phase == "grace" for pid in pids)


def test_a_stale_aged_band_is_removed_by_the_beat_and_other_components_stay(sim, timed, clock):
    deps = timed()
    bands.publish(deps.redis, "binance", "XRPUSDT", "aged", PriceBand(None, Decimal("0.61")))
    trailing = PriceBand(Decimal("0.5"), Decimal("0.7"))
    bands.publish(deps.redis, "binance", "XRPUSDT", "trailing", trailing)
    assert run_aged_cycle(deps).stale_bands_removed == ["XRPUSDT"]
    assert bands.components(deps.redis, "binance", "XRPUSDT") == {"trailing": trailing}


def test_the_price_task_runs_the_aged_reaction_and_closes_at_the_target(sim, timed, clock):
    from core.services import price_path

    deps = timed()
    start = clock.now()
    pid = open_active(deps)
    at_hours(clock, start, 4)
    run_aged_cycle(deps)
    sim.set_price("BTCUSDT", "60059.9")
    price_path.on_price(deps, "binance", "BTCUSDT")
    assert position(pid).status == "active" and aged_row(pid) is not None
    sim.set_price("BTCUSDT", "60060")
    sim.admin(  # a take-profit placed by hand: a zombie once the position is gone
        "POST",
        "/_sim/order",
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "price": "90000",
            "quantity": "0.001",
            "reduceOnly": True,
        },
    )
    price_path.on_price(deps, "binance", "BTCUSDT")
    assert position(pid).status == "closed" and position(pid).close_reason == "aged"
    assert aged_row(pid) is None and aged_band(deps, "BTCUSDT") is None
    # the close's zombie pass ran for the symbol once the lock was released
    assert [o for o in sim.state()["open_orders"] if o["symbol"] == "BTCUSDT"] == []
