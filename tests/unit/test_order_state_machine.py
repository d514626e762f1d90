"""The order ledger's state machine (core/domain/orders.py): forward moves and late fills
are allowed, a move backwards is refused (the ledger keeps what it had)."""

from hypothesis import given
from hypothesis import strategies as st

from core.domain.orders import (
    ORDER_MOVES,
    ORDER_STATUSES,
    TERMINAL_ORDER_STATUSES,
    OrderStatus,
    next_order_status,
    order_move_allowed,
    status_from_exchange,
)

S = OrderStatus


def test_the_table_covers_every_status_and_the_database_allows_each():
    assert set(ORDER_MOVES) == set(OrderStatus)
    assert set(ORDER_STATUSES) == {s.value for s in OrderStatus}


def test_a_filled_order_is_final():
    assert TERMINAL_ORDER_STATUSES == {S.FILLED}
    for status in OrderStatus:
        assert order_move_allowed(S.FILLED, status) is (status is S.FILLED)


def test_forward_moves_are_allowed():
    assert order_move_allowed(S.INTENT, S.OPEN)
    assert order_move_allowed(S.OPEN, S.PARTIALLY_FILLED)
    assert order_move_allowed(S.PARTIALLY_FILLED, S.FILLED)
    assert order_move_allowed(S.OPEN, S.CANCELLED)
    assert order_move_allowed(S.INTENT, S.REJECTED)


def test_late_fills_are_allowed_after_a_cancel_or_an_expiry():
    for ended in (S.CANCELLED, S.EXPIRED):
        assert order_move_allowed(ended, S.FILLED)
        assert order_move_allowed(ended, S.PARTIALLY_FILLED)


def test_backward_moves_are_refused():
    assert not order_move_allowed(S.OPEN, S.INTENT)
    assert not order_move_allowed(S.FILLED, S.OPEN)
    assert not order_move_allowed(S.FILLED, S.CANCELLED)
    assert not order_move_allowed(S.CANCELLED, S.OPEN)
    assert not order_move_allowed(S.PARTIALLY_FILLED, S.OPEN)


def test_a_refused_move_keeps_the_stored_status():
    assert next_order_status(S.FILLED, S.OPEN) is S.FILLED
    assert next_order_status(S.OPEN, S.INTENT) is S.OPEN
    assert next_order_status(None, S.OPEN) is S.OPEN  # a new row takes what it is given


def test_a_refusal_known_not_to_have_executed_may_be_sent_again():
    assert order_move_allowed(S.REJECTED, S.INTENT)


def test_exchange_statuses_map_onto_the_ledger():
    assert status_from_exchange(None) is S.REJECTED
    assert status_from_exchange("open") is S.OPEN
    assert status_from_exchange("open", filled=True) is S.FILLED
    assert status_from_exchange("closed") is S.FILLED
    assert status_from_exchange("canceled") is S.CANCELLED
    assert status_from_exchange("something new") is S.EXPIRED


statuses = st.sampled_from(list(OrderStatus))


@given(statuses, st.lists(statuses, max_size=12))
def test_property_once_filled_always_filled_and_every_kept_move_is_in_the_table(
    first: OrderStatus, proposed: list[OrderStatus]
) -> None:
    current = first
    for new in proposed:
        kept = next_order_status(current, new)
        assert kept in (current, new)
        assert kept is current or order_move_allowed(current, kept)
        if current is S.FILLED:
            assert kept is S.FILLED
        current = kept


@given(st.lists(statuses, min_size=1, max_size=12))
def test_property_an_order_seen_live_never_returns_to_intent(proposed: list[OrderStatus]) -> None:
    current, seen_live = S.INTENT, False
    for new in proposed:
        current = next_order_status(current, new)
        seen_live = seen_live or current in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED)
        if seen_live:
            assert current is not S.INTENT
