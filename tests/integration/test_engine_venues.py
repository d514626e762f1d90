"""The engine's paths end to end on both dialects of the paper exchange (Binance USD-M and
Bybit v5 linear): opening with a stop, trailing moves, protection restoring a stop,
reconciliation of phantoms and missing positions, zombie cleanup, aged closes, the ingest's
price and user-data streams. Each test runs once per dialect (``paper_venue``); what only
Bybit has (hedge-mode slots, position-level TP/SL) runs on Bybit (``bybit_venue``).

Symbols are exchange-native (``BTCUSDT``) in the database, events and bands on both venues.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.config import get_settings, load_settings
from core.db.models import AgedPosition, Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.exchange.client_ids import client_order_id, parse_client_id
from core.ingest.prices import SETTLE_TASK, run_price_stream
from core.services import bands, price_path
from core.services.aged import run_aged_cycle
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.recovery import recover_interrupted
from core.services.zombies import cleanup_zombies
from tests.fixtures.venue import PaperVenue

pytestmark = pytest.mark.integration


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``probe`` until it answers something truthy (a bound on waiting, not a check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def opened(venue: PaperVenue, deps: Deps, symbol: str = "BTCUSDT", side: str = "long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition(venue.name, symbol, side))
        assert position is not None
        pid = position.id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def visible(venue: PaperVenue, symbol: str) -> None:
    """Bybit lists a position opened by hand only after a delay: wait until it does."""
    if venue.bybit:
        wait_for(
            lambda: all(
                p["visible"] for p in venue.sim.state()["positions"] if p["symbol"] == symbol
            ),
            f"{symbol} in the position list",
        )


def position(pid: int) -> Position:
    with unit_of_work() as s:
        found = s.get(Position, pid)
        assert found is not None
        return found


def positions_for(venue: PaperVenue, symbol: str) -> list[Position]:
    with unit_of_work() as s:
        query = select(Position).where(Position.exchange == venue.name, Position.symbol == symbol)
        return list(s.scalars(query.order_by(Position.id)))


def events(pid: int | None = None, type_: str | None = None) -> list[Event]:
    with unit_of_work() as s:
        query = select(Event).order_by(Event.id)
        if pid is not None:
            query = query.where(Event.position_id == pid)
        if type_ is not None:
            query = query.where(Event.type == type_)
        return list(s.scalars(query))


def move_to(venue: PaperVenue, deps: Deps, symbol: str, price: str) -> None:
    """The mark moves; the ingest records the tick (its own script); the price task runs."""
    venue.set_price(symbol, price)
    keys = [price_path.window_key(venue.name, symbol), price_path.pending_key(venue.name, symbol)]
    deps.redis.eval(price_path.TICK_SCRIPT, 2, *keys, price, 1_000, 30_000)
    price_path.on_price(deps, venue.name, symbol)


# -- opening -------------------------------------------------------------------------------


def test_an_opening_ends_active_with_one_reduce_only_stop_for_the_filled_quantity(paper_venue):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, venue.deps)

    held = position(pid)
    [on_exchange] = venue.positions("BTCUSDT")
    [stop] = venue.stops("BTCUSDT")
    assert held.status == "active" and held.exchange == venue.name and held.symbol == "BTCUSDT"
    assert on_exchange.side == "long" and on_exchange.quantity == held.quantity
    assert stop.side == "sell" and stop.reduce_only and stop.quantity == held.quantity
    assert stop.trigger == held.stop_price == Decimal("58800")
    with unit_of_work() as s:
        ledger = {o.purpose: o.client_order_id for o in s.scalars(select(Order))}
    assert ledger["stop"] == stop.client_id and parse_client_id(stop.client_id).position_id == pid
    assert {e.symbol for e in events(pid)} == {"BTCUSDT"}
    assert {e.exchange for e in events(pid)} == {venue.name}


# -- trailing ------------------------------------------------------------------------------


def test_a_rising_price_trails_the_stop_one_live_stop_at_a_time(paper_venue):
    venue = paper_venue
    deps = venue.make_deps(trailing_min_update_interval=0)
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, deps)

    move_to(venue, deps, "BTCUSDT", "61000")  # activation at +1.5 %: 61000 * 0.995
    assert venue.triggers() == [Decimal("60695")]
    move_to(venue, deps, "BTCUSDT", "62000")
    assert venue.triggers() == [Decimal("61690")]

    row = trailing_row(pid)
    assert (row.state, row.current_stop, row.update_count) == ("active", Decimal("61690"), 2)
    assert position(pid).stop_price == Decimal("61690")
    with unit_of_work() as s:
        stops = sorted(o.status for o in s.scalars(select(Order).where(Order.purpose == "stop")))
    assert stops == ["cancelled", "cancelled", "open"]  # placed, then the old one cancelled


def trailing_row(pid: int) -> TrailingStop:
    with unit_of_work() as s:
        row = s.get(TrailingStop, pid)
        assert row is not None
        return row


# -- protection ----------------------------------------------------------------------------


def test_protection_restores_a_stop_cancelled_by_hand_once(paper_venue):
    venue = paper_venue
    pid = opened(venue, venue.deps)
    intended = position(pid).stop_price
    assert venue.cancel_stops_by_hand("BTCUSDT") == 1

    report = check_protection(venue.deps)

    assert report.stops_placed == 1 and report.failed == 0
    [stop] = venue.stops("BTCUSDT")
    [on_exchange] = venue.positions("BTCUSDT")
    assert stop.trigger == intended and stop.quantity == on_exchange.quantity
    assert parse_client_id(stop.client_id).purpose == "protection"
    types = [e.type for e in events(pid)]
    assert "missing_stop_detected" in types and "stop_set_by_protection" in types
    again = check_protection(venue.deps)
    assert again.healthy == 1 and again.stops_placed == 0 and len(venue.stops("BTCUSDT")) == 1


# -- reconciliation ------------------------------------------------------------------------


def test_a_position_closed_by_hand_is_settled_as_a_phantom_and_its_stop_removed(paper_venue):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, venue.deps)
    with unit_of_work() as s:
        s.add(AgedPosition(position_id=pid, phase="grace", detected_at=datetime.now(UTC)))
    venue.set_price("BTCUSDT", "61000")
    venue.close_by_hand("BTCUSDT")
    assert len(venue.stops("BTCUSDT")) == 1  # the venue leaves the reduce-only stop armed

    report = reconcile_positions(venue.deps)

    assert report.phantoms_closed == 1
    closed = position(pid)
    assert closed.status == "closed" and closed.close_reason == "phantom"
    assert closed.exit_price == Decimal("61000") and closed.realized_pnl > 0
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is None and s.get(AgedPosition, pid) is None
    assert venue.orders("BTCUSDT") == []
    assert [e.position_id for e in events(type_="phantom_position_closed")] == [pid]
    assert reconcile_positions(venue.deps).phantoms_closed == 0


def test_a_position_opened_by_hand_is_adopted_and_protected_once(paper_venue):
    venue = paper_venue
    venue.open_by_hand("ETHUSDT", "SELL", "0.5")
    visible(venue, "ETHUSDT")

    report = reconcile_positions(venue.deps)

    assert report.adopted == 1
    [adopted] = positions_for(venue, "ETHUSDT")
    assert adopted.status == "active" and adopted.side == "short"
    assert adopted.quantity == Decimal("0.5") and adopted.entry_price == Decimal("3000")
    [stop] = venue.stops("ETHUSDT")
    assert stop.side == "buy" and stop.quantity == Decimal("0.5") and stop.trigger > 3000
    again = reconcile_positions(venue.deps)
    assert again.adopted == 0 and len(positions_for(venue, "ETHUSDT")) == 1
    assert len(venue.stops("ETHUSDT")) == 1


def test_a_position_opened_by_hand_already_beyond_its_stop_is_adopted_and_protected(paper_venue):
    venue = paper_venue
    venue.open_by_hand("ETHUSDT", "SELL", "0.5")  # a short at 3000: its stop would be 3060
    visible(venue, "ETHUSDT")
    venue.set_price("ETHUSDT", "3200")  # the venue refuses a buy stop at 3060 now

    report = reconcile_positions(venue.deps)

    assert report.adopted == 1
    [adopted] = positions_for(venue, "ETHUSDT")
    assert adopted.status == "active" and adopted.entry_price == Decimal("3000")
    [on_exchange] = venue.positions("ETHUSDT")  # not closed at market
    assert on_exchange.side == "short" and on_exchange.quantity == Decimal("0.5")
    [stop] = venue.stops("ETHUSDT")
    assert stop.side == "buy" and stop.quantity == Decimal("0.5") and stop.reduce_only
    assert stop.trigger > Decimal("3200") and adopted.stop_price == stop.trigger
    types = [e.type for e in events(adopted.id)]
    assert "stop_loss_placed" in types
    assert not {"stop_loss_failed", "position_rollback_started", "position_rolled_back"} & set(
        types
    )
    [placed] = events(adopted.id, "stop_loss_placed")
    assert Decimal(placed.data["moved_beyond_mark_from"]) == Decimal("3060")


# -- zombies -------------------------------------------------------------------------------


def test_orders_left_behind_by_a_hand_close_are_cancelled_and_a_live_stop_kept(paper_venue):
    venue = paper_venue
    opened(venue, venue.deps)  # BTCUSDT: the engine's stop must survive the cleanup
    [engine_stop] = venue.stops("BTCUSDT")
    venue.open_by_hand("ETHUSDT", "BUY", "0.5")
    visible(venue, "ETHUSDT")
    venue.stop_by_hand("ETHUSDT", "SELL", "2500", "0.5")
    venue.limit_by_hand("ETHUSDT", "SELL", "4000", "0.5")
    venue.stop_by_hand("BTCUSDT", "SELL", "55000", "0.001")  # a second stop on a live position
    venue.close_by_hand("ETHUSDT")
    left = venue.orders("ETHUSDT")
    assert left  # what the venue keeps after the close (at least the conditional stop)

    report = cleanup_zombies(venue.deps)

    assert report.failed == 0 and report.cancelled == len(left) + 1
    assert report.by_reason == {"no_position": len(left), "surplus_stop": 1}
    assert venue.orders("ETHUSDT") == []
    assert venue.stops("BTCUSDT") == [engine_stop]
    assert len(events(type_="zombie_order_cancelled")) == len(left) + 1
    assert cleanup_zombies(venue.deps).detected == 0


def test_hedge_mode_a_stop_left_on_the_closed_slot_is_a_wrong_position_idx_zombie(bybit_venue):
    venue = bybit_venue
    client = venue.deps.exchange.client
    client.set_position_mode(True, "BTC/USDT:USDT")  # hedge: 1 = long slot, 2 = short slot
    venue.open_by_hand("BTCUSDT", "BUY", "0.01", position_idx=1)
    venue.open_by_hand("BTCUSDT", "SELL", "0.01", position_idx=2)
    visible(venue, "BTCUSDT")
    wait_for(lambda: len(venue.deps.exchange.positions()) == 2, "both slots listed")
    venue.stop_by_hand("BTCUSDT", "BUY", "66000", "0.01", position_idx=2)  # the short's stop
    venue.close_by_hand("BTCUSDT", position_idx=2)
    [left] = venue.stops("BTCUSDT")
    assert left.position_idx == 2

    report = cleanup_zombies(venue.deps)

    assert report.by_reason == {"wrong_position_idx": 1} and report.cancelled == 1
    assert venue.stops("BTCUSDT") == []
    [long_slot] = venue.positions("BTCUSDT")
    assert long_slot.position_idx == 1 and long_slot.quantity == Decimal("0.01")
    [cancelled] = events(type_="zombie_order_cancelled")
    assert cancelled.data["reason"] == "wrong_position_idx" and cancelled.symbol == "BTCUSDT"


def test_a_position_level_stop_loss_set_by_hand_is_removed_through_trading_stop(bybit_venue):
    venue = bybit_venue
    pid = opened(venue, venue.deps)
    [engine_stop] = venue.stops("BTCUSDT")
    venue.deps.exchange.client.privatePostV5PositionTradingStop(
        {
            "category": "linear",
            "symbol": "BTCUSDT",
            "positionIdx": 0,
            "tpslMode": "Full",
            "stopLoss": "57000",
        }
    )  # as if set in the UI: a StopLoss row of quantity 0 guarding the whole slot
    assert sorted(o.kind for o in venue.stops("BTCUSDT")) == ["Stop", "StopLoss"]
    since = venue.sim.requests()["next"]

    report = cleanup_zombies(venue.deps)

    assert report.by_reason == {"surplus_stop": 1} and report.cancelled == 1
    assert venue.stops("BTCUSDT") == [engine_stop]
    [row] = [p for p in venue.sim.state()["positions"] if p["symbol"] == "BTCUSDT"]
    assert row["stopLoss"] == "0"
    mutations = [r["path"] for r in venue.sim.requests(since)["requests"] if r["method"] == "POST"]
    assert mutations == ["/v5/position/trading-stop"]
    assert position(pid).status == "active"


def test_cancelling_an_already_removed_position_stop_loss_reports_it_gone(bybit_venue):
    venue = bybit_venue
    opened(venue, venue.deps)
    client = venue.deps.exchange.client
    request = {"category": "linear", "symbol": "BTCUSDT", "positionIdx": 0, "tpslMode": "Full"}
    client.privatePostV5PositionTradingStop({**request, "stopLoss": "57000"})
    [tpsl] = [o for o in venue.deps.exchange.open_orders("BTCUSDT") if o.close_position]
    client.privatePostV5PositionTradingStop({**request, "stopLoss": "0"})  # by hand, again

    assert venue.deps.exchange.cancel_order("BTCUSDT", tpsl.id, conditional=True) is False
    assert len(venue.stops("BTCUSDT")) == 1  # the engine's own stop is untouched


# -- recovery ------------------------------------------------------------------------------


def test_an_entry_filled_by_a_worker_that_died_is_recovered_with_its_stop(paper_venue):
    venue = paper_venue
    with unit_of_work() as s:
        row = create_position(
            s, NewPosition(venue.name, "BTCUSDT", "long", status=PositionStatus.PENDING_ENTRY)
        )
        assert row is not None
        row.status, row.requested_quantity = "entry_placed", Decimal("0.01")
        pid, correlation = row.id, row.correlation_id
    # the dead worker's entry, sent through its own client (the recovering one never saw it:
    # on Bybit the position may not be listed yet when recovery places the stop)
    venue.make_deps().exchange.create_market_order(
        "BTCUSDT", "buy", Decimal("0.01"), client_order_id(pid, correlation, "entry")
    )

    recover_interrupted(venue.deps, min_age_seconds=0)

    assert position(pid).status == "active"
    [stop] = venue.stops("BTCUSDT")
    assert stop.quantity == Decimal("0.01") and stop.side == "sell" and stop.reduce_only


# -- aged ----------------------------------------------------------------------------------


def test_a_profitable_aged_position_is_closed_at_market_with_nothing_left(paper_venue):
    venue = paper_venue
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    deps = dataclasses.replace(venue.deps, clock=clock)
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, deps)
    venue.set_price("BTCUSDT", "60600")  # +1 %: net profit, short of trailing activation
    clock.advance(seconds=3.1 * 3600)

    assert run_aged_cycle(deps).outcomes == {"closed": 1}

    closed = position(pid)
    assert closed.status == "closed" and closed.close_reason == "aged"
    assert closed.exit_price == Decimal("60600") and closed.realized_pnl > 0
    with unit_of_work() as s:
        assert s.get(AgedPosition, pid) is None and s.get(TrailingStop, pid) is None
    assert venue.positions() == [] and venue.orders() == []
    assert bands.components(deps.redis, venue.name, "BTCUSDT").get("aged") is None


# -- the ingest's streams ------------------------------------------------------------------


class StreamThread:
    """``run_price_stream`` on its own loop and thread, queueing into a list."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.sent: list[tuple[str, tuple[object, ...]]] = []
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _enqueue(self, name: str, args: Any) -> None:
        self.sent.append((name, tuple(args)))

    def _run(self) -> None:
        try:
            coro = run_price_stream(self.settings, self.stop, enqueue=self._enqueue)
            self.loop.run_until_complete(coro)
        except BaseException as exc:  # surfaced on exit
            self.error = exc

    def __enter__(self) -> StreamThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "price stream did not stop"
        assert self.error is None, self.error


def window_ticks(venue: PaperVenue, symbol: str) -> int:
    return int(venue.deps.redis.hget(price_path.window_key(venue.name, symbol), "n") or 0)


def test_the_ingest_streams_mark_prices_settles_a_filled_stop_and_reconnects(
    paper_venue, redis_url
):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, venue.deps)
    get_settings.cache_clear()
    settings = load_settings(
        exchange_url=venue.sim.url, paper_dialect=venue.name, price_band_refresh_interval=5
    )
    with StreamThread(settings) as stream:
        bands.publish(venue.deps.redis, venue.name, "ETHUSDT", "trailing", PriceBand.empty())
        wait_for(lambda: window_ticks(venue, "ETHUSDT") >= 2, "ETHUSDT ticks")
        assert window_ticks(venue, "BTCUSDT") == 0  # untracked: no band, no work
        assert ("vigil.stops.on_price", (venue.name, "ETHUSDT")) in stream.sent

        venue.set_price("BTCUSDT", "58000")  # through the stop: it fills on the exchange
        wait_for(lambda: (SETTLE_TASK, (pid, "stop_triggered")) in stream.sent, "a settle")

        venue.sim.admin("POST", "/_sim/ws/disconnect")  # every stream drops
        wait_for(lambda: events(type_="websocket_reconnected"), "a reconnect event")
        venue.deps.redis.delete(price_path.window_key(venue.name, "ETHUSDT"))
        wait_for(lambda: window_ticks(venue, "ETHUSDT") >= 2, "ETHUSDT ticks after it")
    [triggered] = events(pid, "stop_triggered")
    assert triggered.exchange == venue.name and triggered.symbol == "BTCUSDT"
    assert venue.positions("BTCUSDT") == []
    assert [n for n, _ in stream.sent].count(SETTLE_TASK) == 1
