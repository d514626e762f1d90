"""Zombie order classification: each rule, the safety valves, and a partition property."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.orders import ExchangeOrder, ExchangePosition
from core.domain.sides import OrderSide, Side
from core.domain.zombies import ZombieParams, ZombieReason, classify_orders

D = Decimal
R = ZombieReason
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def order(
    oid: str,
    *,
    symbol: str = "BTCUSDT",
    side: OrderSide = SELL,
    type_: str = "stop_market",
    reduce_only: bool = True,
    close_position: bool = False,
    conditional: bool = True,
    qty: str = "1",
    idx: int = 0,
    age_min: float = 30,
    client_id: str | None = None,
    close_on_trigger: bool = False,
) -> ExchangeOrder:
    return ExchangeOrder(
        id=oid,
        client_id=client_id,
        symbol=symbol,
        side=side,
        type=type_,
        reduce_only=reduce_only,
        close_position=close_position,
        is_conditional=conditional,
        trigger_price=D(95) if conditional else None,
        quantity=D(qty),
        position_idx=idx,
        created_at=NOW - timedelta(minutes=age_min),
        close_on_trigger=close_on_trigger,
    )


def entry(oid: str, **kw: object) -> ExchangeOrder:
    base: dict[str, object] = {
        "type_": "limit",
        "reduce_only": False,
        "conditional": False,
        "side": BUY,
    }
    base.update(kw)
    return order(oid, **base)  # type: ignore[arg-type]


LONG = ExchangePosition("BTCUSDT", Side.LONG, D(1), D(100))
SHORT = ExchangePosition("BTCUSDT", Side.SHORT, D(1), D(100))


def reasons(
    orders: list[ExchangeOrder], positions: list[ExchangePosition], **kw: object
) -> dict[str, ZombieReason | None]:
    report = classify_orders(orders, positions, NOW, **kw)  # type: ignore[arg-type]
    result: dict[str, ZombieReason | None] = {o.id: None for o in report.keep}
    for v in report.cancel:
        result[v.order.id] = v.reason
    return result


@pytest.mark.parametrize(
    "o",
    [
        order("reduce", conditional=False, type_="limit"),
        order("stop"),
        order("tp", type_="take_profit_market"),
        order("cp", reduce_only=False, close_position=True, qty="0"),
        order("cot", reduce_only=False, close_on_trigger=True),
        order("stop-entry", reduce_only=False),
    ],
)
def test_closing_or_conditional_order_without_position_is_zombie(o: ExchangeOrder) -> None:
    assert reasons([o], []) == {o.id: R.NO_POSITION}


def test_stop_for_an_existing_position_is_kept() -> None:
    assert reasons([order("s")], [LONG]) == {"s": None}


def test_old_entry_without_position_is_stale_and_young_one_is_kept() -> None:
    got = reasons([entry("old", age_min=11), entry("young", age_min=9)], [])
    assert got == {"old": R.STALE_ENTRY, "young": None}


def test_entry_exactly_at_threshold_is_kept() -> None:
    assert reasons([entry("e", age_min=10)], []) == {"e": None}


def test_entry_of_unknown_age_without_position_is_kept() -> None:
    o = ExchangeOrder("x", None, "BTCUSDT", BUY, "limit", False, False, False, None, D(1))
    assert reasons([o], []) == {"x": None}


def test_wrong_position_idx_in_hedge_mode() -> None:
    hedge_long = ExchangePosition("BTCUSDT", Side.LONG, D(1), D(100), position_idx=1)
    got = reasons([order("ok", idx=1), order("bad", idx=2), order("oneway", idx=0)], [hedge_long])
    assert got == {"ok": None, "bad": R.WRONG_POSITION_IDX, "oneway": R.WRONG_POSITION_IDX}


def test_close_order_on_the_same_side_as_the_position_is_wrong_side() -> None:
    assert reasons([order("buy-close", side=BUY)], [LONG]) == {"buy-close": R.WRONG_SIDE}
    assert reasons([order("sell-close", side=SELL)], [SHORT]) == {"sell-close": R.WRONG_SIDE}


def test_non_reduce_only_order_that_would_flip_or_increase() -> None:
    flip = entry("flip", side=SELL, qty="1.5")
    add = entry("add", side=BUY, qty="0.1")
    partial_exit = entry("tp", side=SELL, qty="0.5")
    got = reasons([flip, add, partial_exit], [LONG])
    assert got == {"flip": R.WOULD_FLIP, "add": R.WOULD_INCREASE, "tp": None}


def test_surplus_stops_keep_the_engines_newest() -> None:
    orders = [
        order("a", client_id="vigil-a", age_min=30),
        order("b", client_id="vigil-b", age_min=5),
        order("c", client_id="hand", age_min=1),
    ]
    got = reasons(orders, [LONG], known_client_ids=frozenset({"vigil-a", "vigil-b"}))
    assert got == {"a": R.SURPLUS_STOP, "b": None, "c": R.SURPLUS_STOP}


def test_surplus_without_known_ids_keeps_the_newest() -> None:
    got = reasons([order("a", age_min=30), order("b", age_min=5)], [LONG])
    assert got == {"a": R.SURPLUS_STOP, "b": None}


def test_take_profits_are_not_counted_as_surplus_stops() -> None:
    got = reasons(
        [order("s"), order("tp1", type_="take_profit_market"), order("tp2", type_="TAKE_PROFIT")],
        [LONG],
    )
    assert got == {"s": None, "tp1": None, "tp2": None}


def test_busy_symbol_orders_are_never_judged() -> None:
    got = reasons([order("s"), entry("e", age_min=100)], [], busy_symbols=frozenset({"BTCUSDT"}))
    assert got == {"s": None, "e": None}


def test_order_newer_than_position_snapshot_is_never_judged() -> None:
    got = reasons([order("s", age_min=1)], [], positions_as_of=NOW - timedelta(minutes=2))
    assert got == {"s": None}
    got = reasons([order("s", age_min=3)], [], positions_as_of=NOW - timedelta(minutes=2))
    assert got == {"s": R.NO_POSITION}


def test_other_symbols_positions_do_not_protect_an_order() -> None:
    eth = ExchangePosition("ETHUSDT", Side.LONG, D(1), D(100))
    assert reasons([order("s")], [eth]) == {"s": R.NO_POSITION}


def test_zero_quantity_position_is_no_position() -> None:
    flat = ExchangePosition("BTCUSDT", Side.LONG, D(0), D(100))
    assert reasons([order("s")], [flat]) == {"s": R.NO_POSITION}


def test_custom_stale_threshold() -> None:
    report = classify_orders(
        [entry("e", age_min=2)], [], NOW, ZombieParams(stale_entry_after=timedelta(minutes=1))
    )
    assert [v.reason for v in report.cancel] == [R.STALE_ENTRY]


order_st = st.builds(
    order,
    st.uuids().map(str),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    side=st.sampled_from([BUY, SELL]),
    type_=st.sampled_from(["stop_market", "limit", "take_profit_market", "market"]),
    reduce_only=st.booleans(),
    close_position=st.booleans(),
    conditional=st.booleans(),
    qty=st.sampled_from(["0", "0.5", "1", "2"]),
    idx=st.sampled_from([0, 1, 2]),
    age_min=st.floats(0, 60),
    client_id=st.sampled_from([None, "vigil-1", "x"]),
)
position_st = st.builds(
    ExchangePosition,
    st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    st.sampled_from(list(Side)),
    st.sampled_from([D(0), D(1)]),
    st.just(D(100)),
    st.sampled_from([0, 1, 2]),
)


@given(
    st.lists(order_st, max_size=8, unique_by=lambda o: o.id),
    # one position per slot: an account cannot hold two positions on (symbol, index)
    st.lists(position_st, max_size=3, unique_by=lambda p: (p.symbol, p.position_idx)),
)
@settings(max_examples=150)
def test_property_every_order_is_kept_or_cancelled_exactly_once_and_one_stop_survives_per_position(
    orders: list[ExchangeOrder], positions: list[ExchangePosition]
) -> None:
    report = classify_orders(orders, positions, NOW, known_client_ids=frozenset({"vigil-1"}))
    ids = [v.order.id for v in report.cancel] + [o.id for o in report.keep]
    assert sorted(ids) == sorted(o.id for o in orders)
    live = [p for p in positions if p.quantity > 0]
    for p in live:
        kept_stops = [
            o
            for o in report.keep
            if o.is_stop_loss
            and o.symbol == p.symbol
            and o.position_idx == p.position_idx
            and o.side is p.side.close_order_side
        ]
        assert len(kept_stops) <= 1
        had = [
            o
            for o in orders
            if o.is_stop_loss
            and o.symbol == p.symbol
            and o.position_idx == p.position_idx
            and o.side is p.side.close_order_side
        ]
        positions_in_slot = [
            q for q in live if q.symbol == p.symbol and q.position_idx == p.position_idx
        ]
        if had and len(positions_in_slot) == 1:
            assert len(kept_stops) == 1  # a position's stop is never all cancelled
