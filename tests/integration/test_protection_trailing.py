"""Protection and trailing share one stop: ownership flips only under the symbol lock, and
however their runs interleave a position ends with exactly one live stop."""

import threading
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.trailing import PriceWindow
from core.services import trailing
from core.services.closing import lock_for
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection

pytestmark = pytest.mark.integration


@pytest.fixture
def deps(make_deps):
    return make_deps(trailing_min_update_interval=0, guardian_lock_wait_seconds=10)


def opened(deps, symbol="BTCUSDT") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def live_stops(sim, symbol="BTCUSDT"):
    return [o for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol]


def trail(deps, sim, pid, price: str) -> None:
    """One price-path reaction, the way the price task runs it: under the symbol lock."""
    sim.set_price("BTCUSDT", price)
    with unit_of_work() as s:
        position = s.get(Position, pid)
    with lock_for(deps, "binance", "BTCUSDT") as held:
        trailing.react(deps, held, position, PriceWindow.at(Decimal(price)), deps.clock.now())


def owner(pid) -> str:
    with unit_of_work() as s:
        return s.get(TrailingStop, pid).owner


def test_trailing_takes_the_stop_back_from_protection_and_leaves_one_stop(sim, deps):
    pid = opened(deps)
    [first] = live_stops(sim)
    deps.exchange.cancel_order("BTCUSDT", str(first["algoId"]), conditional=True)
    assert check_protection(deps).stops_placed == 1
    assert owner(pid) == "protection"

    trail(deps, sim, pid, "62000")

    assert owner(pid) == "trailing"
    [stop] = live_stops(sim)
    assert Decimal(stop["triggerPrice"]) > Decimal("61000")
    with unit_of_work() as s:
        types = {e.type for e in s.scalars(select(Event).where(Event.position_id == pid))}
    assert "trailing_stop_reclaimed" in types
    again = check_protection(deps)
    assert again.healthy == 1 and again.stops_placed == 0
    assert len(live_stops(sim)) == 1


def test_interleaved_trailing_moves_and_protection_cycles_keep_exactly_one_stop(
    sim, deps, make_deps
):
    pid = opened(deps)
    guard = make_deps(guardian_lock_wait_seconds=10)  # its own exchange client, like a worker
    done = threading.Event()
    placed: list[int] = []

    def protect() -> None:
        while not done.is_set():
            placed.append(check_protection(guard).stops_placed)

    runner = threading.Thread(target=protect)
    runner.start()
    try:
        for i in range(1, 16):
            trail(deps, sim, pid, str(60000 + 300 * i))
    finally:
        done.set()
        runner.join()

    assert len(placed) >= 1 and sum(placed) == 0  # a healthy trailing owner is left alone
    [stop] = live_stops(sim)
    assert Decimal(stop["triggerPrice"]) > Decimal("64000")
    assert owner(pid) == "trailing"
