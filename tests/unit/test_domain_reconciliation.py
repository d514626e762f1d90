"""Reconciliation diff and exit-price evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.orders import ExchangePosition
from core.domain.positions import PositionStatus as S
from core.domain.reconciliation import (
    DbPosition,
    Fill,
    ReconKind,
    ReconParams,
    Severity,
    exit_price_from_trades,
    reconcile,
)
from core.domain.sides import OrderSide, Side

D = Decimal
K = ReconKind
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
P = ReconParams(intermediate_grace=timedelta(minutes=2))


def db(
    symbol: str = "BTCUSDT",
    status: S = S.ACTIVE,
    side: Side = Side.LONG,
    qty: str = "1",
    age_s: int = 600,
    exchange: str = "binance",
    pid: int = 1,
) -> DbPosition:
    return DbPosition(pid, exchange, symbol, side, D(qty), status, NOW - timedelta(seconds=age_s))


def ex(
    symbol: str = "BTCUSDT", side: Side = Side.LONG, qty: str = "1", idx: int = 0
) -> ExchangePosition:
    return ExchangePosition(symbol, side, D(qty), D(100), idx)


def kinds(
    dbs: list[DbPosition], exs: list[ExchangePosition], **kw: object
) -> list[tuple[str, ReconKind]]:
    return [(a.symbol, a.kind) for a in reconcile("binance", dbs, exs, NOW, P, **kw)]  # type: ignore[arg-type]


def test_matching_positions_produce_no_action() -> None:
    assert kinds([db()], [ex()]) == []


def test_phantom_active_position_is_closed_in_db() -> None:
    (action,) = reconcile("binance", [db()], [], NOW, P)
    assert action.kind is K.CLOSE_PHANTOM and action.db_position == db()


def test_missing_position_is_adopted() -> None:
    (action,) = reconcile("binance", [], [ex(side=Side.SHORT)], NOW, P)
    assert action.kind is K.ADOPT_MISSING and action.exchange_position == ex(side=Side.SHORT)


def test_quantity_mismatch_beyond_step_is_corrected() -> None:
    (action,) = reconcile("binance", [db(qty="1")], [ex(qty="0.5")], NOW, P)
    assert action.kind is K.CORRECT_QUANTITY
    assert (action.quantity_from, action.quantity_to) == (D(1), D("0.5"))


def test_quantity_less_than_a_step_off_is_not_corrected() -> None:
    steps = {"BTCUSDT": D("0.001")}
    assert kinds([db(qty="1")], [ex(qty="1.0005")], step_sizes=steps) == []
    assert kinds([db(qty="1")], [ex(qty="1.001")], step_sizes=steps) == [
        ("BTCUSDT", K.CORRECT_QUANTITY)
    ]


def test_quantity_one_whole_lot_off_is_corrected() -> None:
    # a symbol traded in whole units: one lot added by hand is a real change
    steps = {"BTCUSDT": D(1)}
    assert kinds([db(qty="3")], [ex(qty="4")], step_sizes=steps) == [
        ("BTCUSDT", K.CORRECT_QUANTITY)
    ]


def test_side_mismatch_is_critical_and_changes_nothing_else() -> None:
    (action,) = reconcile("binance", [db(side=Side.LONG)], [ex(side=Side.SHORT)], NOW, P)
    assert action.kind is K.SIDE_MISMATCH and action.severity is Severity.CRITICAL


@pytest.mark.parametrize("status", [S.PENDING_ENTRY, S.ENTRY_PLACED, S.PENDING_SL, S.CLOSING])
@pytest.mark.parametrize("on_exchange", [True, False])
def test_young_intermediate_is_never_phantom_nor_missing(status: S, on_exchange: bool) -> None:
    exs = [ex()] if on_exchange else []
    assert kinds([db(status=status, age_s=119)], exs) == [("BTCUSDT", K.WAIT)]


@pytest.mark.parametrize("status", [S.PENDING_ENTRY, S.ENTRY_PLACED, S.PENDING_SL, S.CLOSING])
def test_intermediate_past_grace_goes_to_recovery(status: S) -> None:
    assert kinds([db(status=status, age_s=120)], []) == [("BTCUSDT", K.RESOLVE_INTERMEDIATE)]
    assert kinds([db(status=status, age_s=120)], [ex()]) == [("BTCUSDT", K.RESOLVE_INTERMEDIATE)]


def test_recently_closed_symbol_is_not_adopted_yet() -> None:
    assert kinds([db(status=S.CLOSED, age_s=30)], [ex()]) == [("BTCUSDT", K.WAIT)]
    assert kinds([db(status=S.CLOSED, age_s=300)], [ex()]) == [("BTCUSDT", K.ADOPT_MISSING)]


def test_terminal_rows_are_not_phantoms() -> None:
    assert kinds([db(status=S.FAILED), db(status=S.ROLLED_BACK, pid=2)], []) == []


def test_two_open_db_rows_for_a_symbol_are_critical() -> None:
    (action,) = reconcile("binance", [db(pid=1), db(pid=2)], [ex()], NOW, P)
    assert action.kind is K.DUPLICATE_DB and action.severity is Severity.CRITICAL


def test_other_exchange_rows_and_zero_quantity_positions_are_ignored() -> None:
    assert kinds([db(exchange="bybit")], [ex(qty="0")]) == []


def test_hedge_mode_opposite_position_without_row_is_adopted() -> None:
    got = kinds([db(side=Side.LONG)], [ex(side=Side.LONG, idx=1), ex(side=Side.SHORT, idx=2)])
    assert got == [("BTCUSDT", K.ADOPT_MISSING)]


def test_actions_are_sorted_by_symbol() -> None:
    got = kinds([db("XRPUSDT", pid=1)], [ex("ADAUSDT"), ex("ETHUSDT")])
    assert [s for s, _ in got] == ["ADAUSDT", "ETHUSDT", "XRPUSDT"]


# ---------------------------------------------------------------- exit price


def fill(fid: str, price: str, qty: str, minutes: int, side: OrderSide = OrderSide.SELL) -> Fill:
    return Fill(fid, side, D(price), D(qty), NOW + timedelta(minutes=minutes))


def test_exit_vwap_from_closing_fills() -> None:
    trades = [fill("1", "100", "1", 5), fill("2", "102", "1", 6)]
    assert exit_price_from_trades(trades, Side.LONG, D(2), NOW) == D(101)


def test_exit_ignores_entry_side_fills_before_open_and_duplicates() -> None:
    trades = [
        fill("e", "90", "2", 1, side=OrderSide.BUY),
        fill("old", "50", "2", -10),
        fill("1", "100", "2", 5),
        fill("1", "100", "2", 5),
    ]
    assert exit_price_from_trades(trades, Side.LONG, D(2), NOW) == D(100)


def test_exit_consumes_newest_fills_first_up_to_quantity() -> None:
    trades = [
        fill("partial-earlier", "80", "1", 2),
        fill("a", "100", "1", 5),
        fill("b", "110", "2", 6),
    ]
    # position of 2 at the end: only the 2 newest units count
    assert exit_price_from_trades(trades, Side.LONG, D(2), NOW) == D(110)
    assert exit_price_from_trades(trades, Side.LONG, D(3), NOW) == (D(100) + D(220)) / 3


def test_exit_is_none_without_complete_evidence() -> None:
    assert exit_price_from_trades([], Side.LONG, D(1), NOW) is None
    assert exit_price_from_trades([fill("1", "100", "0.5", 1)], Side.LONG, D(1), NOW) is None
    assert exit_price_from_trades(
        [fill("1", "100", "0.999", 1)], Side.LONG, D(1), NOW, D("0.001")
    ) == D(100)
    assert exit_price_from_trades([fill("1", "100", "1", 1)], Side.LONG, D(0), NOW) is None


def test_short_exit_uses_buy_fills() -> None:
    trades = [fill("1", "95", "1", 1, side=OrderSide.BUY), fill("2", "99", "1", 2)]
    assert exit_price_from_trades(trades, Side.SHORT, D(1), NOW) == D(95)


@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=D(1), max_value=D(1000), places=2),
            st.decimals(min_value=D("0.01"), max_value=D(5), places=2),
        ),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=200)
def test_property_exit_vwap_lies_within_the_fill_prices(
    fills: list[tuple[Decimal, Decimal]],
) -> None:
    trades = [fill(str(i), str(p), str(q), i) for i, (p, q) in enumerate(fills)]
    total = sum((q for _, q in fills), D(0))
    price = exit_price_from_trades(trades, Side.LONG, total, NOW)
    assert price is not None
    assert min(p for p, _ in fills) <= price <= max(p for p, _ in fills)


statuses = st.sampled_from(list(S))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C"]),
            statuses,
            st.sampled_from(list(Side)),
            st.integers(0, 300),
        ),
        max_size=4,
    ),
    st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(list(Side))), max_size=3),
)
@settings(max_examples=150)
def test_property_young_intermediate_symbols_are_never_adopted_or_closed(
    rows: list[tuple[str, S, Side, int]], positions: list[tuple[str, Side]]
) -> None:
    dbs = [
        db(f"{s}USDT", st_, side, age_s=age, pid=i) for i, (s, st_, side, age) in enumerate(rows)
    ]
    exs = [ex(f"{s}USDT", side) for s, side in positions]
    actions = reconcile("binance", dbs, exs, NOW, P)
    young = {
        p.symbol
        for p in dbs
        if p.status in {S.PENDING_ENTRY, S.ENTRY_PLACED, S.PENDING_SL, S.CLOSING}
        and NOW - p.updated_at < P.intermediate_grace
    }
    for a in actions:
        if a.symbol in young:
            assert a.kind not in {K.ADOPT_MISSING, K.CLOSE_PHANTOM, K.CORRECT_QUANTITY}
