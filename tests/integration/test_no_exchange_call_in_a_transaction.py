"""No exchange call is made while the engine holds a database transaction.

Why: an exchange call can take seconds (a timeout, a fill poll, a rate-limit backoff); a
transaction held across it pins a pooled connection and its row versions for that long,
and a worker killed mid-call leaves the decision it was about to record in limbo. Every
service records its intent and commits before it sends, and records the result after.

The venue here is the real adapter against the paper exchange behind a guard that, on every
call, asks the engine's connection pool how many connections are checked out: a session in
a transaction holds one, a session between transactions holds none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from core.db.models import Position
from core.db.session import get_engine, unit_of_work
from core.exchange.errors import Retryable
from core.services.closing import close_position, settle_external_close
from core.services.deps import Deps
from core.services.invariants import check_invariants
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.recovery import recover_interrupted
from core.services.zombies import cleanup_zombies

pytestmark = pytest.mark.integration


class OutsideTransactionsVenue:
    """The adapter, with a note of every call made while a database connection was held."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []
        self.inside_transaction: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or not callable(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if get_engine().pool.checkedout():  # type: ignore[attr-defined]
                self.inside_transaction.append(name)
            return value(*args, **kwargs)

        return guarded


@pytest.fixture
def guarded(deps: Deps) -> tuple[Deps, OutsideTransactionsVenue]:
    venue = OutsideTransactionsVenue(deps.exchange)
    return dataclasses.replace(deps, exchange=venue), venue  # type: ignore[arg-type]


def new_position(symbol: str = "BTCUSDT", side: str = "long") -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition("binance", symbol, side))
        assert position is not None
        return position.id


def status(position_id: int) -> str:
    with unit_of_work() as s:
        return s.scalar(select(Position.status).where(Position.id == position_id)) or ""


def test_the_opening_calls_the_exchange_only_between_transactions(sim, guarded):
    deps, venue = guarded
    sim.fault("order", "delayed_fill", delay_ms=300, count=1, method="POST")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    assert {"fetch_order", "create_market_order", "create_stop"} <= set(venue.calls)
    assert venue.inside_transaction == []


def test_the_opening_replayed_looks_up_outside_transactions(sim, guarded):
    deps, venue = guarded
    sim.fault("order", "timeout_after_accept", method="POST", count=1, mode="drop")
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    assert venue.inside_transaction == []


def test_the_rollback_calls_outside_transactions(sim, guarded):
    deps, venue = guarded
    sim.fault("algoOrder", "http_error", method="POST", count=10)
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ROLLED_BACK
    assert {"positions", "trades"} <= set(venue.calls)
    assert venue.inside_transaction == []


def test_the_emergency_stop_calls_outside_transactions(sim, guarded):
    deps, venue = guarded
    sim.fault("algoOrder", "http_error", method="POST", count=3)
    inner_create: Callable[..., Any] = venue._inner.create_market_order

    def refuse_reduce_only(symbol, side, quantity, client_id, *, reduce_only=False):
        if reduce_only:
            raise Retryable("simulated: close refused")
        return inner_create(symbol, side, quantity, client_id, reduce_only=reduce_only)

    venue._inner.create_market_order = refuse_reduce_only
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.EMERGENCY_STOP
    assert "mark_price" in venue.calls
    assert venue.inside_transaction == []


def test_the_close_paths_call_the_exchange_only_between_transactions(sim, guarded):
    deps, venue = guarded
    closed_by_engine = new_position()
    assert open_position(deps, closed_by_engine) is OpenOutcome.ACTIVE
    assert close_position(deps, closed_by_engine, "manual") is True
    assert status(closed_by_engine) == "closed"

    closed_by_hand = new_position("ETHUSDT", "short")
    assert open_position(deps, closed_by_hand) is OpenOutcome.ACTIVE
    sim.admin("POST", "/_sim/close_position", {"symbol": "ETHUSDT"})
    assert settle_external_close(deps, closed_by_hand, "closed_externally") is True
    assert status(closed_by_hand) == "closed"
    assert {"trades", "open_orders", "cancel_order"} <= set(venue.calls)
    assert venue.inside_transaction == []


def test_the_guardians_call_the_exchange_only_between_transactions(sim, guarded):
    deps, venue = guarded
    protected = new_position()
    assert open_position(deps, protected) is OpenOutcome.ACTIVE
    for stop in sim.state()["open_algo_orders"]:  # its stop cancelled by hand
        assert venue._inner.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    assert check_protection(deps).stops_placed == 1

    # opened by hand: adopted and protected
    sim.admin("POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "SELL", "quantity": "1"})
    assert reconcile_positions(deps).adopted == 1

    # a stop by hand left behind by a position closed by hand: a zombie
    sim.admin("POST", "/_sim/open_position", {"symbol": "SOLUSDT", "side": "BUY", "quantity": "1"})
    stop = {"symbol": "SOLUSDT", "side": "SELL", "type": "STOP_MARKET", "triggerPrice": "50"}
    sim.admin("POST", "/_sim/order", {**stop, "quantity": "1", "reduceOnly": True})
    sim.admin("POST", "/_sim/close_position", {"symbol": "SOLUSDT"})
    assert cleanup_zombies(deps).cancelled == 1

    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})  # closed by hand
    reconcile_positions(deps)
    assert status(protected) == "closed"
    recover_interrupted(deps, 0)
    assert {"positions", "open_orders", "create_stop", "cancel_order"} <= set(venue.calls)
    assert venue.inside_transaction == []


def test_the_invariant_check_reads_the_exchange_between_transactions(sim, guarded):
    deps, venue = guarded
    pid = new_position()
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    venue.calls.clear()
    report = check_invariants(deps)
    assert report.errors == () and report.positions_checked == 1
    assert {"positions", "open_orders"} <= set(venue.calls)
    assert venue.inside_transaction == []
