"""Protection decisions: stop recognition, ownership, safe placement, alerts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.orders import ExchangeOrder
from core.domain.protection import (
    ProtectedPosition,
    ProtectionActionKind,
    ProtectionParams,
    StopOwner,
    decide_protection,
    safe_stop_price,
)
from core.domain.sides import OrderSide, Side

D = Decimal
K = ProtectionActionKind
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
P = ProtectionParams()
LONG = ProtectedPosition("BTCUSDT", Side.LONG, D(2), D(100))
SHORT = ProtectedPosition("BTCUSDT", Side.SHORT, D(2), D(100))


def stop(
    oid: str = "s1",
    *,
    side: OrderSide = OrderSide.SELL,
    qty: str = "2",
    close_position: bool = False,
    reduce_only: bool = True,
    trigger: str = "98",
    type_: str = "stop_market",
    client_id: str | None = None,
    created: int = 0,
    idx: int = 0,
    symbol: str = "BTCUSDT",
) -> ExchangeOrder:
    return ExchangeOrder(
        id=oid,
        client_id=client_id,
        symbol=symbol,
        side=side,
        type=type_,
        reduce_only=reduce_only,
        close_position=close_position,
        is_conditional=True,
        trigger_price=D(trigger),
        quantity=D(qty),
        position_idx=idx,
        created_at=NOW - timedelta(minutes=60 - created),
    )


def test_full_stop_live_is_ok() -> None:
    d = decide_protection(LONG, [stop()], D(100), NOW, P)
    assert d.kinds == (K.OK,) and d.protected and d.kept_stop_id == "s1"
    assert d.unprotected_since is None


def test_close_position_stop_with_zero_quantity_counts_as_full() -> None:
    d = decide_protection(
        LONG, [stop(qty="0", close_position=True, reduce_only=False)], D(100), NOW, P
    )
    assert d.kinds == (K.OK,) and d.protected


@pytest.mark.parametrize(
    "order",
    [
        stop(side=OrderSide.BUY),  # wrong side for a long
        stop(type_="take_profit_market"),  # a take-profit is not a stop
        stop(reduce_only=False),  # not closing: an entry stop
        stop(symbol="ETHUSDT"),
        stop(idx=2),  # other hedge slot
    ],
)
def test_orders_that_are_not_this_positions_stop_do_not_count(order: ExchangeOrder) -> None:
    d = decide_protection(LONG, [order], D(100), NOW, P)
    assert K.PLACE_STOP in d.kinds and not d.protected


def test_missing_stop_places_one_at_stop_loss_pct_from_entry() -> None:
    d = decide_protection(LONG, [], D(100), NOW, P)
    place = d.actions[0]
    assert place.kind is K.PLACE_STOP and place.price == D(98) and place.quantity == D(2)
    assert d.unprotected_since == NOW
    assert K.ALERT_UNPROTECTED not in d.kinds  # just noticed


def test_missing_stop_for_short_is_above_entry() -> None:
    d = decide_protection(SHORT, [], D(100), NOW, P, tick_size=D("0.1"))
    assert d.actions[0].price == D(102)


def test_stop_that_would_trigger_at_once_moves_below_mark_by_buffer() -> None:
    d = decide_protection(LONG, [], D("97.5"), NOW, P, tick_size=D("0.01"))
    place = d.actions[0]
    assert place.price == D("97.01")  # 97.5 * 0.995 = 97.0125 -> rounded down
    assert "would trigger at once" in place.reason


def test_short_stop_that_would_trigger_moves_above_mark() -> None:
    price, adjusted = safe_stop_price(D(102), D("102.5"), Side.SHORT, D("0.5"), D("0.01"))
    assert adjusted and price == D("103.02")  # 103.0125 -> rounded up


def test_intended_stop_from_trailing_is_kept_on_replacement() -> None:
    pos = replace(LONG, intended_stop=D("104.5"))
    d = decide_protection(pos, [], D(106), NOW, P)
    assert d.actions[0].price == D("104.5")


def test_partial_stop_is_replaced_place_first_then_cancel() -> None:
    d = decide_protection(LONG, [stop(qty="1")], D(100), NOW, P)
    assert d.kinds == (K.PLACE_STOP, K.CANCEL_SURPLUS)
    assert d.actions[1].order_ids == ("s1",) and not d.protected


def test_stop_short_by_less_than_a_step_is_full() -> None:
    d = decide_protection(LONG, [stop(qty="1.9995")], D(100), NOW, P, step_size=D("0.001"))
    assert d.kinds == (K.OK,)


def test_stop_short_by_one_whole_step_is_partial() -> None:
    # venue quantities are whole steps: one step short is a lot left unprotected
    d = decide_protection(LONG, [stop(qty="1.999")], D(100), NOW, P, step_size=D("0.001"))
    assert d.kinds == (K.PLACE_STOP, K.CANCEL_SURPLUS) and not d.protected
    whole_lots = replace(LONG, quantity=D(4))
    d = decide_protection(whole_lots, [stop(qty="3")], D(100), NOW, P, step_size=D(1))
    assert d.kinds == (K.PLACE_STOP, K.CANCEL_SURPLUS)
    assert d.actions[0].quantity == D(4)


@settings(max_examples=200, deadline=None)
@given(
    lots=st.integers(min_value=2, max_value=10_000),
    short=st.integers(min_value=1, max_value=10_000),
    step=st.sampled_from([D("0.001"), D("0.01"), D("0.1"), D(1), D(10)]),
)
def test_a_stop_any_whole_lot_short_never_counts_as_full(lots: int, short: int, step: D) -> None:
    short = min(short, lots - 1)
    pos = replace(LONG, quantity=lots * step)
    d = decide_protection(
        pos, [stop(qty=str((lots - short) * step))], D(100), NOW, P, step_size=step
    )
    assert not d.protected and d.kinds[0] is K.PLACE_STOP


def test_surplus_stops_cancelled_keeping_the_engines_newest() -> None:
    orders = [
        stop("a", client_id="vigil-1", created=1),
        stop("b", client_id="manual", created=9),
        stop("c", client_id="vigil-2", created=5),
        stop("p", qty="1", created=10),
    ]
    d = decide_protection(
        LONG, orders, D(100), NOW, P, known_client_ids=frozenset({"vigil-1", "vigil-2"})
    )
    assert d.kept_stop_id == "c"
    assert d.kinds == (K.CANCEL_SURPLUS,)
    assert set(d.actions[0].order_ids) == {"a", "b", "p"}


def test_without_known_ids_the_newest_stop_is_kept() -> None:
    d = decide_protection(LONG, [stop("old", created=1), stop("new", created=2)], D(100), NOW, P)
    assert d.kept_stop_id == "new" and d.actions[0].order_ids == ("old",)


def test_alert_after_threshold_of_being_unprotected() -> None:
    pos = replace(LONG, unprotected_since=NOW - timedelta(seconds=60))
    d = decide_protection(pos, [], D(100), NOW, P)
    assert d.kinds == (K.PLACE_STOP, K.ALERT_UNPROTECTED)
    assert d.actions[1].duration == timedelta(seconds=60)
    assert d.unprotected_since == NOW - timedelta(seconds=60)
    young = replace(LONG, unprotected_since=NOW - timedelta(seconds=59))
    assert K.ALERT_UNPROTECTED not in decide_protection(young, [], D(100), NOW, P).kinds


def test_healthy_trailing_with_live_stop_is_left_alone_even_with_surplus() -> None:
    pos = replace(
        LONG, stop_owner=StopOwner.TRAILING, trailing_heartbeat_at=NOW - timedelta(minutes=5)
    )
    d = decide_protection(pos, [stop("a"), stop("b", created=3)], D(100), NOW, P)
    assert d.kinds == (K.OK,) and d.owner is StopOwner.TRAILING


def test_stale_trailing_is_taken_over_then_protection_acts() -> None:
    pos = replace(
        LONG,
        stop_owner=StopOwner.TRAILING,
        trailing_heartbeat_at=NOW - timedelta(minutes=5, seconds=1),
    )
    d = decide_protection(pos, [stop("a"), stop("b", created=3)], D(100), NOW, P)
    assert d.kinds == (K.TAKE_OVER_FROM_TRAILING, K.CANCEL_SURPLUS)
    assert d.owner is StopOwner.PROTECTION


def test_trailing_without_heartbeat_is_stale() -> None:
    pos = replace(LONG, stop_owner=StopOwner.TRAILING)
    assert decide_protection(pos, [stop()], D(100), NOW, P).kinds == (
        K.TAKE_OVER_FROM_TRAILING,
        K.OK,
    )


def test_healthy_trailing_with_no_live_stop_is_taken_over_and_stop_placed() -> None:
    pos = replace(
        LONG, stop_owner=StopOwner.TRAILING, trailing_heartbeat_at=NOW, intended_stop=D(101)
    )
    d = decide_protection(pos, [], D(103), NOW, P)
    assert d.kinds == (K.TAKE_OVER_FROM_TRAILING, K.PLACE_STOP)
    assert d.actions[1].price == D(101) and d.owner is StopOwner.PROTECTION


def test_invalid_params() -> None:
    with pytest.raises(ValueError, match="stop_loss_pct"):
        ProtectionParams(stop_loss_pct=D(0))


@given(
    side=st.sampled_from(list(Side)),
    mark=st.decimals(min_value=D("0.01"), max_value=D(100000), places=2),
    intended=st.decimals(min_value=D("0.01"), max_value=D(200000), places=2),
    buf=st.decimals(min_value=D("0.01"), max_value=D(5), places=2),
    tick=st.none() | st.sampled_from([D("0.01"), D("0.001")]),
)
@settings(max_examples=300)
def test_property_placed_stop_never_triggers_at_once(
    side: Side, mark: Decimal, intended: Decimal, buf: Decimal, tick: Decimal | None
) -> None:
    price, _ = safe_stop_price(intended, mark, side, buf, tick)
    if side is Side.LONG:
        assert price < mark and price <= intended
    else:
        assert price > mark and price >= intended


@given(
    owner=st.sampled_from(list(StopOwner)),
    beat_age=st.none() | st.integers(0, 600),
    qtys=st.lists(st.sampled_from(["0", "1", "2", "3"]), max_size=4),
)
@settings(max_examples=200)
def test_property_protection_places_at_most_one_stop_and_only_as_owner(
    owner: StopOwner, beat_age: int | None, qtys: list[str]
) -> None:
    beat = None if beat_age is None else NOW - timedelta(seconds=beat_age)
    pos = replace(LONG, stop_owner=owner, trailing_heartbeat_at=beat)
    orders = [stop(f"o{i}", qty=q, close_position=q == "0", created=i) for i, q in enumerate(qtys)]
    d = decide_protection(pos, orders, D(100), NOW, P)
    kinds = d.kinds
    assert kinds.count(K.PLACE_STOP) <= 1
    if K.PLACE_STOP in kinds or K.CANCEL_SURPLUS in kinds:
        assert d.owner is StopOwner.PROTECTION
        if owner is StopOwner.TRAILING:
            assert kinds[0] is K.TAKE_OVER_FROM_TRAILING
    if K.PLACE_STOP in kinds and K.CANCEL_SURPLUS in kinds:
        assert kinds.index(K.PLACE_STOP) < kinds.index(K.CANCEL_SURPLUS)
    if d.protected:
        assert d.kept_stop_id is not None
        cancelled = {i for a in d.actions for i in a.order_ids}
        assert d.kept_stop_id not in cancelled
