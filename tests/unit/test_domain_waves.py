"""Waves: window keys, ranking, each filter with its reason, capacity, open-until-N."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.positions import PositionStatus as S
from core.domain.signals import Action, Exchange, Signal
from core.domain.waves import (
    FilterReason,
    OpenOutcome,
    OpenPositionInfo,
    WaveContext,
    WaveKey,
    WaveParams,
    WaveSelection,
    group_into_waves,
    is_late,
    next_to_open,
    select_wave,
    wave_deadline,
    wave_is_due,
    wave_key,
)

D = Decimal
F = FilterReason
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
P = WaveParams(max_trades_per_wave=2, buffer=1, max_open_positions=10)
RICH = WaveContext((), D(1_000_000))


def sig(
    sid: str,
    symbol: str = "BTCUSDT",
    week: str = "70",
    month: str = "60",
    at: datetime = T,
    exchange: Exchange = Exchange.BINANCE,
    action: Action = Action.BUY,
) -> Signal:
    return Signal(sid, symbol, exchange, action, D(week), D(month), at)


def pos(
    symbol: str, status: S = S.ACTIVE, notional: str = "100", exchange: str = "binance"
) -> OpenPositionInfo:
    return OpenPositionInfo(exchange, symbol, status, D(notional))


def reasons(sel: WaveSelection) -> dict[str, FilterReason]:
    return {f.signal.id: f.reason for f in sel.filtered}


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("ts", "start"),
    [
        (T, T),
        (T + timedelta(seconds=899, microseconds=999999), T),
        (T + timedelta(seconds=900), T + timedelta(seconds=900)),
        (T - timedelta(microseconds=1), T - timedelta(seconds=900)),
    ],
)
def test_wave_key_floors_timestamp_to_window(ts: datetime, start: datetime) -> None:
    assert wave_key(sig("a", at=ts), P) == WaveKey(Exchange.BINANCE, start)


def test_wave_id_and_deadline() -> None:
    key = wave_key(sig("a", at=T + timedelta(seconds=5)), P)
    assert key.id == "binance:2026-11-23T12:00:00Z"
    assert wave_deadline(key, P) == T + timedelta(seconds=960)
    assert not wave_is_due(key, T + timedelta(seconds=959), P)
    assert wave_is_due(key, T + timedelta(seconds=960), P)


def test_late_signal_is_one_received_after_its_deadline() -> None:
    s = sig("a", at=T + timedelta(seconds=10))
    assert not is_late(s, T + timedelta(seconds=960), P)
    assert is_late(s, T + timedelta(seconds=961), P)


def test_grouping_separates_windows_and_exchanges() -> None:
    sigs = [
        sig("a", at=T),
        sig("b", at=T + timedelta(seconds=100), week="90"),
        sig("c", at=T + timedelta(seconds=950)),
        sig("d", at=T, exchange=Exchange.BYBIT),
    ]
    waves = group_into_waves(sigs, P)
    assert [(k.id, [s.id for s in v]) for k, v in waves.items()] == [
        ("binance:2026-11-23T12:00:00Z", ["b", "a"]),
        ("binance:2026-11-23T12:15:00Z", ["c"]),
        ("bybit:2026-11-23T12:00:00Z", ["d"]),
    ]


# ---------------------------------------------------------------- selection


def test_rank_by_week_then_month_then_id() -> None:
    sigs = [
        sig("z", "AUSDT", week="70", month="60"),
        sig("b", "BUSDT", week="70", month="61"),
        sig("a", "CUSDT", week="70", month="60"),
        sig("q", "DUSDT", week="71", month="0"),
    ]
    params = WaveParams(max_trades_per_wave=4, buffer=0)
    assert [s.id for s in select_wave(sigs, RICH, params).to_open] == ["q", "b", "a", "z"]


def test_each_filter_reports_its_reason() -> None:
    params = WaveParams(
        min_score_week=D(50),
        min_score_month=D(40),
        stoplist=frozenset({"BADUSDT"}),
        max_trades_per_wave=5,
        buffer=0,
    )
    ctx = WaveContext((pos("OPENUSDT"), pos("PENDUSDT", S.PENDING_ENTRY)), D(10_000))
    sigs = [
        sig("w", "AUSDT", week="49.9"),
        sig("m", "BUSDT", month="39.9"),
        sig("s", "BADUSDT"),
        sig("o", "OPENUSDT"),
        sig("p", "PENDUSDT"),
        sig("d1", "DUPUSDT", week="80"),
        sig("d2", "DUPUSDT", week="75", action=Action.SELL),
        sig("ok", "OKUSDT"),
    ]
    sel = select_wave(sigs, ctx, params)
    assert [s.id for s in sel.to_open] == ["d1", "ok"]
    assert reasons(sel) == {
        "w": F.BELOW_MIN_SCORE_WEEK,
        "m": F.BELOW_MIN_SCORE_MONTH,
        "s": F.STOPLISTED,
        "o": F.ALREADY_OPEN,
        "p": F.ALREADY_OPEN,
        "d2": F.DUPLICATE_IN_WAVE,
    }


def test_min_score_exactly_at_threshold_passes() -> None:
    params = WaveParams(min_score_week=D(70), min_score_month=D(60))
    assert len(select_wave([sig("a")], RICH, params).to_open) == 1


def test_closed_positions_and_other_exchanges_do_not_block() -> None:
    ctx = WaveContext((pos("BTCUSDT", S.CLOSED), pos("ETHUSDT", exchange="bybit")), D(10_000))
    sel = select_wave([sig("a"), sig("b", "ETHUSDT")], ctx, P)
    assert [s.id for s in sel.to_open] == ["a", "b"]


def test_top_n_plus_buffer_then_beyond_limit() -> None:
    sigs = [sig(f"s{i}", f"S{i}USDT", week=str(90 - i)) for i in range(5)]
    sel = select_wave(sigs, RICH, P)
    assert sel.target == 2 and [s.id for s in sel.to_open] == ["s0", "s1", "s2"]
    assert reasons(sel) == {"s3": F.BEYOND_WAVE_LIMIT, "s4": F.BEYOND_WAVE_LIMIT}


@pytest.mark.parametrize(
    ("ctx", "params", "target", "reason"),
    [
        (
            WaveContext(tuple(pos(f"O{i}USDT") for i in range(9)), D(10_000)),
            P,
            1,
            F.MAX_OPEN_POSITIONS,
        ),
        (
            WaveContext(tuple(pos(f"O{i}USDT") for i in range(10)), D(10_000)),
            P,
            0,
            F.MAX_OPEN_POSITIONS,
        ),
        (
            WaveContext((pos("OUSDT", notional="250"),), D(10_000)),
            WaveParams(max_exposure_quote=D(400), max_trades_per_wave=2, buffer=1),
            1,
            F.MAX_EXPOSURE,
        ),
        (WaveContext((), D("199.99")), P, 1, F.INSUFFICIENT_BALANCE),
        (WaveContext((), D(99)), P, 0, F.INSUFFICIENT_BALANCE),
        (
            WaveContext((), D(20)),
            WaveParams(leverage=D(10), max_trades_per_wave=5, buffer=0),
            2,
            F.INSUFFICIENT_BALANCE,
        ),
        (
            WaveContext((), D(300)),
            WaveParams(balance_reserve_quote=D(150), max_trades_per_wave=5, buffer=0),
            1,
            F.INSUFFICIENT_BALANCE,
        ),
    ],
)
def test_capacity_limits_bind_with_their_reason(
    ctx: WaveContext, params: WaveParams, target: int, reason: FilterReason
) -> None:
    sigs = [sig(f"s{i}", f"S{i}USDT", week=str(90 - i)) for i in range(8)]
    sel = select_wave(sigs, ctx, params)
    assert sel.target == target
    assert len(sel.to_open) == (target + params.buffer if target else 0)
    assert set(reasons(sel).values()) == {reason}


# ---------------------------------------------------------------- open until N


def selection(n: int, target: int) -> WaveSelection:
    return WaveSelection(tuple(sig(f"s{i}", f"S{i}USDT") for i in range(n)), target, ())


OK, X, FATAL = OpenOutcome.OPENED, OpenOutcome.FAILED, OpenOutcome.FAILED_FATAL


@pytest.mark.parametrize(
    ("outcomes", "proceed", "index"),
    [
        ([], True, 0),
        ([OK], True, 1),
        ([OK, OK], False, None),  # target reached
        ([X, OK], True, 2),
        ([OK, X, X], False, None),  # candidates exhausted
        ([X, FATAL], False, None),
    ],
)
def test_next_to_open_table(outcomes: list[OpenOutcome], proceed: bool, index: int | None) -> None:
    d = next_to_open(selection(3, 2), outcomes)
    assert (d.proceed, d.next_index) == (proceed, index)


def test_zero_target_opens_nothing() -> None:
    assert not next_to_open(selection(0, 0), []).proceed


score = st.decimals(min_value=D(0), max_value=D(100), places=1)
sig_st = st.builds(
    sig,
    st.uuids().map(lambda u: u.hex[:8]),
    st.sampled_from(["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT"]),
    score.map(str),
    score.map(str),
)


@given(
    st.lists(sig_st, max_size=12, unique_by=lambda s: s.id),
    st.integers(0, 12),
    st.integers(0, 4),
    st.integers(0, 8),
    st.integers(0, 5),
    st.decimals(min_value=D(0), max_value=D(2000), places=0),
    st.lists(st.sampled_from([OK, X, FATAL]), max_size=12),
)
@settings(max_examples=150)
def test_property_selection_partitions_signals_and_never_exceeds_capacity(
    sigs: list[Signal],
    n: int,
    buf: int,
    max_open: int,
    n_open: int,
    balance: Decimal,
    outcomes: list[OpenOutcome],
) -> None:
    params = WaveParams(max_trades_per_wave=n, buffer=buf, max_open_positions=max_open)
    ctx = WaveContext(tuple(pos(f"O{i}USDT") for i in range(n_open)), balance)
    sel = select_wave(sigs, ctx, params)
    assert sorted([s.id for s in sel.to_open] + [f.signal.id for f in sel.filtered]) == sorted(
        s.id for s in sigs
    )
    assert len({s.symbol for s in sel.to_open}) == len(sel.to_open)
    assert sel.target <= min(n, max(max_open - n_open, 0), int(balance // 100))
    assert len(sel.to_open) <= sel.target + buf
    # ranked order
    keys = [(-s.score_week, -s.score_month, s.id) for s in sel.to_open]
    assert keys == sorted(keys)
    # following next_to_open never opens more than target
    opened = 0
    done: list[OpenOutcome] = []
    for outcome in outcomes:
        d = next_to_open(sel, done)
        if not d.proceed:
            break
        assert d.next_index == len(done)
        done.append(outcome)
        opened += outcome is OK
    assert opened <= sel.target
