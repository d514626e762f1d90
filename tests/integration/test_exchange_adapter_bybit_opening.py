"""The engine's atomic open (core.services.opening) end to end on the Bybit simulator:
entry, a stop placed only once the venue shows the position, rollback when no stop can be
placed, and a stop hit settled through the one close path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.services.closing import settle_external_close
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position

pytestmark = pytest.mark.integration


def new_position(symbol: str = "BTCUSDT", side: str = "long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition("bybit", symbol, side))
        assert position is not None
        return position.id


def load(position_id: int) -> Position:
    with unit_of_work() as s:
        position = s.get(Position, position_id)
        assert position is not None
        return position


def event_types(position_id: int) -> list[str]:
    with unit_of_work() as s:
        query = select(Event).where(Event.position_id == position_id).order_by(Event.id)
        return [e.type for e in s.scalars(query)]


def exchange_stops(sim: Any, symbol: str) -> list[dict[str, Any]]:
    return [
        o
        for o in sim.state()["open_orders"]
        if o["symbol"] == symbol and o["stopOrderType"] == "Stop"
    ]


def exchange_positions(sim: Any, symbol: str) -> list[dict[str, Any]]:
    return [p for p in sim.state()["positions"] if p["symbol"] == symbol]


def refused_creates(sim: Any) -> list[int]:
    return [
        r["code"]
        for r in sim.requests()["requests"]
        if r["path"] == "/v5/order/create" and r["code"] is not None
    ]


def test_happy_path_opens_with_one_mark_price_stop_once_the_position_shows(
    bybit_sim: Any, bybit_deps: Any
) -> None:
    bybit_sim.admin("POST", "/_sim/config", {"position_delay_ms": 300})
    pid = new_position()
    assert open_position(bybit_deps, pid) is OpenOutcome.ACTIVE
    position = load(pid)
    assert (position.status, position.exchange) == ("active", "bybit")
    [on_exchange] = exchange_positions(bybit_sim, "BTCUSDT")
    [stop] = exchange_stops(bybit_sim, "BTCUSDT")
    assert Decimal(on_exchange["size"]) == position.quantity == Decimal(stop["qty"])
    assert (stop["side"], stop["triggerDirection"], stop["triggerBy"]) == ("Sell", 2, "MarkPrice")
    assert stop["reduceOnly"] is True and stop["closeOnTrigger"] is True
    assert position.entry_price is not None
    assert Decimal(stop["triggerPrice"]) == position.stop_price < position.entry_price
    assert refused_creates(bybit_sim) == []  # polled for the position, never refused
    types = event_types(pid)
    for expected in (
        "position_created",
        "entry_order_placed",
        "entry_order_filled",
        "stop_loss_placed",
        "trailing_stop_created",
    ):
        assert expected in types
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is not None
        purposes = sorted(o.purpose for o in s.scalars(select(Order)))
    assert purposes == ["entry", "stop"]


def test_short_gets_a_rising_stop_above_entry_and_a_rerun_places_nothing_twice(
    bybit_sim: Any, bybit_deps: Any
) -> None:
    pid = new_position("ETHUSDT", "short")
    assert open_position(bybit_deps, pid) is OpenOutcome.ACTIVE
    assert open_position(bybit_deps, pid) is OpenOutcome.ACTIVE
    position = load(pid)
    [stop] = exchange_stops(bybit_sim, "ETHUSDT")
    assert (stop["side"], stop["triggerDirection"]) == ("Buy", 1)
    assert position.stop_price is not None and position.entry_price is not None
    assert position.stop_price > position.entry_price
    creates = [r for r in bybit_sim.requests()["requests"] if r["path"] == "/v5/order/create"]
    assert len(creates) == 2


def test_stop_refused_rolls_back_and_verifies_the_close(bybit_sim: Any, bybit_deps: Any) -> None:
    # the entry goes through (after=1); three stop attempts fail; the rollback close passes
    bybit_sim.fault("order/create", "http_error", method="POST", after=1, count=3)
    pid = new_position()
    assert open_position(bybit_deps, pid) is OpenOutcome.ROLLED_BACK
    position = load(pid)
    assert position.status == "rolled_back" and position.exit_price == Decimal(60000)
    assert exchange_positions(bybit_sim, "BTCUSDT") == []
    assert exchange_stops(bybit_sim, "BTCUSDT") == []
    types = event_types(pid)
    assert "stop_loss_failed" in types and "position_rolled_back" in types
    with unit_of_work() as s:
        ledger = {o.purpose: o.status for o in s.scalars(select(Order))}
    # the stop's intent is recorded before it is sent; refused, it never became an order
    assert sorted(p for p, status in ledger.items() if status != "rejected") == [
        "entry",
        "rollback",
    ]
    assert ledger["stop"] == "rejected"


def test_a_stop_hit_on_bybit_is_settled_with_its_exit_price(
    bybit_sim: Any, bybit_deps: Any
) -> None:
    pid = new_position()
    assert open_position(bybit_deps, pid) is OpenOutcome.ACTIVE
    bybit_sim.set_price("BTCUSDT", "58000")
    assert settle_external_close(bybit_deps, pid, "stop_hit") is True
    position = load(pid)
    assert position.status == "closed" and position.exit_price == Decimal(58000)
    assert position.realized_pnl is not None and position.realized_pnl < 0
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid) is None
    assert bybit_sim.state()["open_orders"] == []
