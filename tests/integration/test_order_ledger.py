"""The order ledger on real PostgreSQL: ``record_order`` upserts by client id through the
order state machine, so a late answer never moves a stored status backwards."""

from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Event, Order
from core.db.session import unit_of_work
from core.services.positions import NewPosition, create_position, record_order, set_order_status

pytestmark = pytest.mark.integration


def write(pid: int, status: str, filled: str = "0", trigger: str | None = None) -> str:
    with unit_of_work() as s:
        return record_order(
            s,
            pid,
            exchange="binance",
            symbol="BTCUSDT",
            client_order_id="v1-ab-s0",
            purpose="stop",
            side="sell",
            order_type="stop_market",
            quantity=Decimal("0.01"),
            status=status,
            filled_quantity=Decimal(filled),
            trigger_price=Decimal(trigger) if trigger is not None else None,
        )


def stored() -> Order:
    with unit_of_work() as s:
        return s.scalars(select(Order).where(Order.client_order_id == "v1-ab-s0")).one()


def refusals() -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == "order_status_move_refused")))


@pytest.fixture
def pid(clean_db) -> int:
    with unit_of_work() as s:
        position = create_position(s, NewPosition("binance", "BTCUSDT", "long"))
        assert position is not None
        return position.id


def test_forward_moves_are_written(pid):
    assert write(pid, "intent") == "intent"
    assert write(pid, "open") == "open"
    assert write(pid, "filled", "0.01") == "filled"
    assert stored().status == "filled" and stored().filled_quantity == Decimal("0.01")
    assert refusals() == []


def test_a_backward_move_is_refused_and_recorded(pid):
    write(pid, "intent")
    write(pid, "filled", "0.01")

    assert write(pid, "open") == "filled"  # a late answer from before the fill

    assert stored().status == "filled" and stored().filled_quantity == Decimal("0.01")
    [refused] = refusals()
    assert refused.order_id == "v1-ab-s0" and refused.position_id == pid
    assert (refused.data["from_status"], refused.data["to_status"]) == ("filled", "open")


def test_a_late_fill_after_a_cancel_is_kept(pid):
    write(pid, "open")
    set_order_status_in_own_transaction("cancelled")
    assert write(pid, "filled", "0.01") == "filled"
    assert refusals() == []


def set_order_status_in_own_transaction(status: str) -> None:
    with unit_of_work() as s:
        set_order_status(s, "v1-ab-s0", status)


def test_a_status_move_is_written_when_the_state_machine_allows_it(pid):
    write(pid, "open")
    set_order_status_in_own_transaction("cancelled")
    assert stored().status == "cancelled"
    assert refusals() == []


def test_a_status_move_the_state_machine_refuses_keeps_the_row_and_is_recorded(pid):
    write(pid, "filled", "0.01")
    set_order_status_in_own_transaction("cancelled")
    assert stored().status == "filled" and stored().filled_quantity == Decimal("0.01")
    [refused] = refusals()
    assert (refused.data["from_status"], refused.data["to_status"]) == ("filled", "cancelled")
    assert refused.position_id == pid


def test_a_status_move_of_an_unknown_order_changes_nothing(pid):
    set_order_status_in_own_transaction("cancelled")
    with unit_of_work() as s:
        assert s.scalars(select(Order)).all() == []
    assert refusals() == []


def test_the_trigger_price_the_venue_reports_replaces_the_intended_one_and_none_keeps_it(pid):
    write(pid, "intent", trigger="59500")
    write(pid, "open", trigger="59410")  # the venue holds the stop moved beyond the mark
    assert stored().trigger_price == Decimal("59410")

    write(pid, "open")  # an answer without a price erases nothing

    assert stored().trigger_price == Decimal("59410")
