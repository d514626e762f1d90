"""Reconciliation tells a position its own stop closed from a phantom, on both venues.

A stop fill nobody settled (the ingest missed it: restarted, its stream reconnecting, Redis
down) leaves the position ``active`` in the database and gone on the exchange. The
position's own stops are looked up by client id (Binance: an algo order; Bybit: a
conditional order found through ``order/realtime`` or ``order/history``): one that filled
makes the close ``stop_triggered``. A lookup the exchange did not answer proves nothing, so
the position waits for the next cycle instead of being called a phantom. A close requested
for another reason (aged, by the operator) that finds the position already flat asks the
same question, so a stop whose settle was overtaken is still recorded as the stop.
"""

from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Event, Position
from core.db.session import unit_of_work
from core.services.closing import close_position
from core.services.reconciliation import reconcile_positions
from tests.integration.test_engine_venues import opened

pytestmark = pytest.mark.integration

#: the endpoint that looks a stop up by client id, per venue
LOOKUP_ENDPOINTS = {"binance": ["algoOrder"], "bybit": ["order/realtime", "order/history"]}


def _position(pid: int) -> Position:
    with unit_of_work() as s:
        found = s.get(Position, pid)
        assert found is not None
        return found


def _events(pid: int, type_: str) -> list[Event]:
    with unit_of_work() as s:
        return list(
            s.scalars(select(Event).where(Event.position_id == pid, Event.type == type_)).all()
        )


def _fired_unseen(venue) -> tuple[int, Decimal]:
    """A position whose stop filled with nobody watching; its fill price."""
    venue.set_price("BTCUSDT", "60000")
    pid = opened(venue, venue.deps)
    [stop] = venue.triggers("BTCUSDT")
    fill = stop - 100
    venue.set_price("BTCUSDT", fill)
    assert venue.triggers("BTCUSDT") == [] and venue.positions("BTCUSDT") == []
    return pid, fill


def test_a_stop_filled_unseen_is_settled_as_stop_triggered_on_each_venue(paper_venue):
    pid, fill = _fired_unseen(paper_venue)

    reconcile_positions(paper_venue.deps)

    closed = _position(pid)
    assert (closed.status, closed.close_reason) == ("closed", "stop_triggered")
    assert closed.exit_price == fill and closed.realized_pnl is not None
    assert len(_events(pid, "stop_triggered")) == 1
    assert _events(pid, "phantom_position_closed") == []


def test_a_stop_lookup_the_exchange_does_not_answer_defers_the_close_not_a_phantom(paper_venue):
    venue = paper_venue
    pid, fill = _fired_unseen(venue)
    for endpoint in LOOKUP_ENDPOINTS[venue.name]:
        venue.sim.admin(
            "POST", "/_sim/fault", {"endpoint": endpoint, "method": "GET", "kind": "5xx"}
        )

    reconcile_positions(venue.deps)

    assert _position(pid).status == "active"  # not settled on a lookup that proved nothing
    assert _events(pid, "phantom_position_closed") == []

    venue.sim.admin("DELETE", "/_sim/fault")
    reconcile_positions(venue.deps)

    closed = _position(pid)
    assert (closed.status, closed.close_reason) == ("closed", "stop_triggered")
    assert closed.exit_price == fill


def test_a_close_that_finds_the_position_closed_by_its_own_stop_records_the_stop(paper_venue):
    """An aged (or operator's) close overtaking the settle of a stop that filled meanwhile
    sends nothing: the position is closed ``stop_triggered``, not with the close's reason."""
    pid, fill = _fired_unseen(paper_venue)

    assert close_position(paper_venue.deps, pid, "aged")

    closed = _position(pid)
    assert (closed.status, closed.close_reason) == ("closed", "stop_triggered")
    assert closed.exit_price == fill and closed.realized_pnl is not None
    assert len(_events(pid, "stop_triggered")) == 1
    assert _events(pid, "close_order_placed") == []
