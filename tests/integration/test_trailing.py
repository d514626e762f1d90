"""The trailing stop service on the paper exchange: activation, make-before-break moves,
rate limit, failures on either side of a move, ownership, restart, the stop firing."""

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.dead_runs import dead_key
from core.domain.zombies import ZombieReason, classify_orders
from core.exchange.adapter import ExchangeAdapter
from core.exchange.client_ids import client_order_id
from core.locks import lock_key
from core.services import bands, price_path, trailing
from core.services.closing import close_position
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position, record_order
from shell.harness.protection_monitor import ProtectionMonitor

pytestmark = pytest.mark.integration
EX = "binance"


def opened(deps, symbol="BTCUSDT", side="long") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, symbol, side)).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def tick(redis_client, symbol, price, tick_ms=1_000):
    """What the ingest does for a tick outside the band (the same script)."""
    keys = [price_path.window_key(EX, symbol), price_path.pending_key(EX, symbol)]
    return redis_client.eval(price_path.TICK_SCRIPT, 2, *keys, str(price), tick_ms, 30_000)


def move_to(sim, deps, symbol, price, requeue=None):
    """The mark moves to ``price``; the ingest records it; the price task runs."""
    sim.set_price(symbol, str(price))
    tick(deps.redis, symbol, price)
    return price_path.on_price(deps, EX, symbol, requeue)


def live_stops(sim, symbol="BTCUSDT"):
    return [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]


def live_triggers(sim, symbol="BTCUSDT"):
    return sorted(Decimal(o["triggerPrice"]) for o in live_stops(sim, symbol))


def trailing_row(pid) -> TrailingStop | None:
    with unit_of_work() as s:
        return s.get(TrailingStop, pid)


def events(pid, type_=None):
    with unit_of_work() as s:
        q = select(Event).where(Event.position_id == pid).order_by(Event.id)
        if type_ is not None:
            q = q.where(Event.type == type_)
        return list(s.scalars(q))


@pytest.fixture
def fast(make_deps):
    return make_deps(trailing_min_update_interval=0)


def test_rising_price_activates_then_trails_the_stop_and_writes_each_step(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    assert live_triggers(sim) == [Decimal("58800")]

    move_to(sim, fast, "BTCUSDT", "60500")  # below activation (60900): nothing moves
    assert live_triggers(sim) == [Decimal("58800")]
    move_to(sim, fast, "BTCUSDT", "61000")  # activates: 61000 * 0.995
    assert live_triggers(sim) == [Decimal("60695")]
    move_to(sim, fast, "BTCUSDT", "62000")
    assert live_triggers(sim) == [Decimal("61690")]

    row = trailing_row(pid)
    assert (row.state, row.highest_price, row.current_stop) == ("active", 62000, 61690)
    assert row.update_count == 2 and row.owner == "trailing"
    with unit_of_work() as s:
        assert s.get(Position, pid).stop_price == Decimal("61690")
        ledger = {o.client_order_id: o.status for o in s.scalars(select(Order))}
    assert [e.type for e in events(pid, "trailing_stop_activated")] == ["trailing_stop_activated"]
    updated = [
        (Decimal(e.data["old_stop"]), Decimal(e.data["new_stop"]))
        for e in events(pid, "trailing_stop_updated")
    ]
    assert updated == [(58800, 60695), (60695, 61690)]
    stops = {cid: status for cid, status in ledger.items() if "-s" in cid}
    assert sorted(stops.values()) == ["cancelled", "cancelled", "open"]


def test_a_move_places_the_new_stop_before_cancelling_the_old_and_is_never_unprotected(
    sim, fast, paper_exchange
):
    sim.set_price("BTCUSDT", "60000")
    opened(fast)
    since = sim.requests()["next"]
    # slow both halves of every move so the sampler sees its inside
    sim.fault("algoOrder", "latency", method="POST", latency_ms=150)
    sim.fault("algoOrder", "latency", method="DELETE", latency_ms=150)
    monitor = ProtectionMonitor(
        ExchangeAdapter(paper_exchange), lambda symbol: "active", interval=0.02
    ).start()
    try:
        for price in ("61000", "61500", "62000"):
            move_to(sim, fast, "BTCUSDT", price)
    finally:
        report = monitor.stop()
    assert report.samples >= 20
    assert report.gaps == []  # at no sample was the position without a full stop
    calls = [
        r["method"]
        for r in sim.requests(since)["requests"]
        if r["path"] == "/fapi/v1/algoOrder" and r["method"] in ("POST", "DELETE")
    ]
    assert calls == ["POST", "DELETE"] * 3  # make, then break, for each move
    assert live_triggers(sim) == [Decimal("61690")]


def test_rate_limit_defers_a_move_and_the_deferred_move_happens_when_due(sim, make_deps):
    clock = ManualClock(datetime.now(UTC))
    deps = dataclasses.replace(make_deps(trailing_min_update_interval=10), clock=clock)
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    move_to(sim, deps, "BTCUSDT", "61000")
    assert live_triggers(sim) == [Decimal("60695")]

    clock.advance(seconds=1)
    countdowns = []
    result = move_to(sim, deps, "BTCUSDT", "62000", requeue=countdowns.append)
    assert live_triggers(sim) == [Decimal("60695")]  # held back by the rate limit
    assert trailing_row(pid).pending_stop == Decimal("61690")
    [limited] = events(pid, "trailing_stop_rate_limited")
    assert Decimal(limited.data["wanted_stop"]) == Decimal("61690")
    assert result.rerun_at == clock.now() + timedelta(seconds=9)
    assert countdowns == [9.0]  # the task queued itself for when the move falls due
    band = bands.components(deps.redis, EX, "BTCUSDT")["trailing"]
    assert band.valid_until == result.rerun_at  # the ingest wakes the task from then on
    assert tick(deps.redis, "BTCUSDT", "62100") == 0  # pending: ticks only join its window

    clock.advance(seconds=9)
    price_path.on_price(deps, EX, "BTCUSDT")  # the scheduled re-run
    assert live_triggers(sim) == [Decimal("61789.5")]  # 62100 * 0.995: it saw the later tick
    row = trailing_row(pid)
    assert row.pending_stop is None and row.current_stop == Decimal("61789.5")


def test_failure_to_place_the_new_stop_keeps_the_old_one_and_records_it(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    sim.fault("algoOrder", "rate_limit", method="POST", count=1)
    move_to(sim, fast, "BTCUSDT", "61000")
    assert live_triggers(sim) == [Decimal("58800")]
    row = trailing_row(pid)
    assert row.current_stop == Decimal("58800") and row.state == "inactive"
    [failed] = events(pid, "trailing_stop_update_failed")
    assert failed.data["stage"] == "place" and Decimal(failed.data["wanted_stop"]) == 60695
    assert events(pid, "api_rate_limit_hit")

    price_path.on_price(fast, EX, "BTCUSDT")  # the next run (re-run / tick) succeeds
    assert live_triggers(sim) == [Decimal("60695")]
    assert trailing_row(pid).state == "active"


def test_a_lost_answer_is_looked_up_and_adopted_never_sent_twice(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    since = sim.requests()["next"]
    sim.fault("algoOrder", "timeout_after_accept", method="POST", count=1, mode="drop")
    move_to(sim, fast, "BTCUSDT", "61000")
    calls = [
        r["method"] for r in sim.requests(since)["requests"] if r["path"] == "/fapi/v1/algoOrder"
    ]
    assert calls == ["POST", "GET", "DELETE"]  # sent once, looked up, old one cancelled
    assert live_triggers(sim) == [Decimal("60695")]  # one new stop, the old one cancelled
    assert trailing_row(pid).current_stop == Decimal("60695")


def test_a_move_whose_worker_died_after_sending_adopts_the_stop_it_finds(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    with unit_of_work() as s:
        position = s.get(Position, pid)
        cid = client_order_id(pid, position.correlation_id, "stop", 1)
        # what a killed worker leaves: the intent committed, the order on the exchange
        record_order(
            s,
            position,
            exchange=EX,
            symbol="BTCUSDT",
            client_order_id=cid,
            purpose="stop",
            side="sell",
            order_type="stop_market",
            quantity=position.quantity,
            status="intent",
            trigger_price=Decimal("60300"),
            reduce_only=True,
        )
    sim.set_price("BTCUSDT", "61000")  # the price that made the dead worker move the stop
    fast.exchange.create_stop("BTCUSDT", "sell", position.quantity, Decimal("60300"), cid)
    move_to(sim, fast, "BTCUSDT", "61000")
    assert live_triggers(sim) == [Decimal("60300")]  # adopted, no second stop for the move
    row = trailing_row(pid)
    assert row.current_stop == Decimal("60300") and row.state == "active"
    move_to(sim, fast, "BTCUSDT", "61000")  # the next decision moves on from there
    assert live_triggers(sim) == [Decimal("60695")]


def test_failure_to_cancel_the_old_stop_leaves_it_to_the_zombie_cleaner(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    sim.fault("algoOrder", "http_error", method="DELETE", count=1)
    move_to(sim, fast, "BTCUSDT", "61000")
    assert live_triggers(sim) == [Decimal("58800"), Decimal("60695")]  # never zero stops
    [failed] = events(pid, "trailing_old_stop_cancel_failed")
    with unit_of_work() as s:
        old = s.scalars(select(Order).where(Order.client_order_id == failed.order_id)).one()
        assert old.status == "open" and old.trigger_price == Decimal("58800")
        known = frozenset(s.scalars(select(Order.client_order_id)))
    orders = [o.to_domain() for o in fast.exchange.open_orders()]
    positions = [p.to_domain() for p in fast.exchange.positions()]
    report = classify_orders(orders, positions, datetime.now(UTC), known_client_ids=known)
    [zombie] = report.cancel
    assert zombie.order.client_id == failed.order_id
    assert zombie.reason is ZombieReason.SURPLUS_STOP

    move_to(sim, fast, "BTCUSDT", "62000")  # the next move's break step retries it
    assert live_triggers(sim) == [Decimal("61690")]


def test_protection_owned_stop_is_reclaimed_only_when_a_full_stop_is_live(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    with unit_of_work() as s:
        s.get(TrailingStop, pid).owner = "protection"
    move_to(sim, fast, "BTCUSDT", "61000")
    assert trailing_row(pid).owner == "trailing"
    assert events(pid, "trailing_stop_reclaimed")
    assert live_triggers(sim) == [Decimal("60695")]

    with unit_of_work() as s:
        s.get(TrailingStop, pid).owner = "protection"
    [stop] = live_stops(sim)
    fast.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    move_to(sim, fast, "BTCUSDT", "62000")
    assert live_stops(sim) == []  # no stop: protection's emergency, not trailing's move
    row = trailing_row(pid)
    assert row.owner == "protection" and row.current_stop == Decimal("60695")
    [failed] = events(pid, "trailing_stop_update_failed")
    assert failed.data["stage"] == "reclaim"


@pytest.mark.parametrize(
    ("symbol", "side", "entry"), [("BTCUSDT", "long", 60000), ("ETHUSDT", "short", 3000)]
)
def test_trailing_never_loosens_the_stop_on_a_random_path(sim, fast, symbol, side, entry):
    sim.set_price(symbol, str(entry))
    pid = opened(fast, symbol, side)
    rng = random.Random(11)
    price = Decimal(entry)
    direction = 1 if side == "long" else -1
    previous = live_triggers(sim, symbol)
    for _ in range(18):
        step = Decimal(rng.uniform(-0.012, 0.018) * direction)
        price = (price * (1 + step)).quantize(Decimal("0.1"))
        stop = trailing_row(pid).current_stop
        if (price - stop) * direction <= 0:
            break  # the path crossed the stop: it fired, nothing left to trail
        move_to(sim, fast, symbol, price)
        now = live_triggers(sim, symbol)
        assert len(now) == 1
        assert (now[0] - previous[0]) * direction >= 0, f"loosened {previous} -> {now}"
        previous = now
    assert trailing_row(pid).update_count >= 3


def test_restart_resumes_from_the_durable_state_not_from_scratch(sim, make_deps, redis_client):
    deps = make_deps(trailing_min_update_interval=0)
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    move_to(sim, deps, "BTCUSDT", "61000")
    move_to(sim, deps, "BTCUSDT", "62000")
    before = trailing_row(pid)

    # every process restarts: new clients, no Redis state, nothing in memory
    del deps
    redis_client.flushall()
    deps = make_deps(trailing_min_update_interval=0)

    move_to(sim, deps, "BTCUSDT", "61800")  # below the high seen before the restart
    after = trailing_row(pid)
    assert (after.highest_price, after.current_stop) == (before.highest_price, Decimal("61690"))
    assert after.update_count == before.update_count and after.state == "active"
    move_to(sim, deps, "BTCUSDT", "63000")
    assert live_triggers(sim) == [Decimal("62685")]  # from the resumed high, not a new start
    assert len(events(pid, "trailing_stop_activated")) == 1


def test_stop_fired_on_the_exchange_is_settled_with_exit_and_pnl_and_no_row_remains(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    move_to(sim, fast, "BTCUSDT", "62000")
    assert live_triggers(sim) == [Decimal("61690")]
    with pytest.raises(trailing.StopFillNotVisible):
        trailing.settle_stop_triggered(fast, pid)  # the exchange still shows the position
    sim.set_price("BTCUSDT", "61600")  # through the stop: it fires on the exchange
    assert trailing.settle_stop_triggered(fast, pid) is True
    with unit_of_work() as s:
        p = s.get(Position, pid)
        assert p.status == "closed" and p.exit_price == Decimal("61600")
        assert p.realized_pnl == (Decimal("61600") - 60000) * p.quantity - p.fees
    assert trailing_row(pid) is None
    assert sim.state()["open_algo_orders"] == []
    assert trailing.settle_stop_triggered(fast, pid) is False  # a second delivery: nothing


def test_price_task_refreshes_the_heartbeat_and_withdraws_the_band_after_a_close(sim, fast):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(fast)
    with unit_of_work() as s:
        s.get(TrailingStop, pid).heartbeat_at = datetime(2020, 1, 1, tzinfo=UTC)
    move_to(sim, fast, "BTCUSDT", "60100")
    assert trailing_row(pid).heartbeat_at > datetime.now(UTC) - timedelta(minutes=1)
    assert "trailing" in bands.components(fast.redis, EX, "BTCUSDT")

    assert close_position(fast, pid, "manual") is True
    assert trailing_row(pid) is None
    move_to(sim, fast, "BTCUSDT", "60200")
    assert bands.components(fast.redis, EX, "BTCUSDT") == {}  # the ingest stops watching


def test_sweep_wakes_only_positions_no_tick_woke_and_those_without_a_band(sim, fast):
    """Of the positions no tick woke lately, the sweep wakes the price task only where a
    decision at the latest mark would change something (or the band is gone); for the
    others it only refreshes the heartbeat, without a run."""
    prices = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150", "BNBUSDT": "600"}
    for symbol, price in prices.items():
        sim.set_price(symbol, price)
    fresh, quiet, unbanded, moved = (opened(fast, s) for s in prices)
    move_to(sim, fast, "BTCUSDT", "60100")  # fresh heartbeat and a band
    move_to(sim, fast, "ETHUSDT", "3001")
    move_to(sim, fast, "BNBUSDT", "601")
    stale = datetime.now(UTC) - timedelta(minutes=1)
    with unit_of_work() as s:
        s.get(TrailingStop, quiet).heartbeat_at = stale
        s.get(TrailingStop, moved).heartbeat_at = stale
    sim.set_price("BNBUSDT", "650")  # activation reached, but no tick recorded it
    assert "trailing" in bands.components(fast.redis, EX, "SOLUSDT")  # from its activation
    fast.redis.delete(bands.band_key(EX, "SOLUSDT"))  # lost since (a Redis restart)
    quiet_before = trailing_row(quiet)
    fresh_heartbeat = trailing_row(fresh).heartbeat_at
    sent = []
    since = sim.requests()["next"]
    report = price_path.sweep(fast, lambda ex, symbol: sent.append(symbol))
    assert report.watched == 4 and sorted(sent) == ["BNBUSDT", "SOLUSDT"]
    assert report.refreshed == 1
    quiet_after = trailing_row(quiet)
    assert quiet_after.heartbeat_at > stale  # watched, decided in the batch
    assert (quiet_after.current_stop, quiet_after.highest_price, quiet_after.state) == (
        quiet_before.current_stop,
        quiet_before.highest_price,
        quiet_before.state,
    )
    assert trailing_row(fresh).heartbeat_at == fresh_heartbeat  # not due: untouched
    assert price_path.sweep(fast, lambda ex, symbol: sent.append(symbol)).queued == 0
    for symbol in sent:  # the queued tasks run
        price_path.on_price(fast, EX, symbol)
    marks = [r for r in sim.requests(since)["requests"] if r["path"].endswith("premiumIndex")]
    assert len(marks) == 1  # one batched read for the sweep, none per woken position
    assert trailing_row(unbanded).heartbeat_at is not None
    assert "trailing" in bands.components(fast.redis, EX, "SOLUSDT")
    assert trailing_row(moved).state == "active"  # its run activated it at the mark
    assert live_triggers(sim, "BNBUSDT") == [Decimal("646.75")]


def test_sweep_wakes_a_quiet_position_whose_symbol_had_a_run_that_died(sim, fast):
    """A dead run's leftovers (a stop sent, never recorded) are the price run's to resolve."""
    sim.set_price("ETHUSDT", "3000")
    pid = opened(fast, "ETHUSDT")
    move_to(sim, fast, "ETHUSDT", "3001")
    with unit_of_work() as s:
        s.get(TrailingStop, pid).heartbeat_at = datetime.now(UTC) - timedelta(minutes=1)
    sent: list[str] = []
    assert price_path.sweep(fast, lambda ex, symbol: sent.append(symbol)).queued == 0
    with unit_of_work() as s:
        s.get(TrailingStop, pid).heartbeat_at = datetime.now(UTC) - timedelta(minutes=1)
    fast.redis.set(dead_key(lock_key(EX, "ETHUSDT")), "someone")
    assert price_path.sweep(fast, lambda ex, symbol: sent.append(symbol)).queued == 1
    assert sent == ["ETHUSDT"]
