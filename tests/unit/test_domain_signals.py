"""Signal frame parsing: the wire contract, every rejection reason, and a never-raises fuzz."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.sides import Side
from core.domain.signals import (
    Action,
    Exchange,
    ParseResult,
    Rejection,
    RejectReason,
    Signal,
    SignalParams,
    parse_frame,
)
from core.domain.symbols import from_ccxt_symbol, normalize_symbol, to_ccxt_symbol

GOOD: dict[str, Any] = {
    "type": "signal",
    "id": "9f1c2",
    "symbol": "BTCUSDT",
    "exchange": "binance",
    "action": "BUY",
    "score_week": 71.5,
    "score_month": 64.0,
    "timestamp": "2026-11-23T12:00:03Z",
}


def frame(**changes: Any) -> str:
    obj = {**GOOD, **changes}
    for key, value in list(obj.items()):
        if value is _DROP:
            del obj[key]
    return json.dumps(obj)


_DROP = object()


def only_rejection(result: ParseResult) -> Rejection:
    assert result.signals == ()
    assert len(result.rejections) == 1
    return result.rejections[0]


def test_contract_example_parses_to_one_signal_with_decimal_scores_and_utc_time() -> None:
    result = parse_frame(json.dumps(GOOD))
    assert result.rejections == ()
    assert result.signals == (
        Signal(
            id="9f1c2",
            symbol="BTCUSDT",
            exchange=Exchange.BINANCE,
            action=Action.BUY,
            score_week=Decimal("71.5"),
            score_month=Decimal("64.0"),
            timestamp=datetime(2026, 11, 23, 12, 0, 3, tzinfo=UTC),
        ),
    )
    assert result.signals[0].side is Side.LONG


def test_bytes_frame_parses_like_text() -> None:
    assert parse_frame(json.dumps(GOOD).encode()) == parse_frame(json.dumps(GOOD))


def test_sell_is_short_and_bybit_is_accepted() -> None:
    (sig,) = parse_frame(frame(action="SELL", exchange="bybit")).signals
    assert sig.side is Side.SHORT and sig.exchange is Exchange.BYBIT


def test_score_is_parsed_exactly_from_text_not_via_float() -> None:
    (sig,) = parse_frame(frame(score_week=0.1, score_month=12)).signals
    assert sig.score_week == Decimal("0.1")
    assert sig.score_month == Decimal(12)


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    (sig,) = parse_frame(frame(timestamp="2026-11-23T14:00:03+02:00")).signals
    assert sig.timestamp == datetime(2026, 11, 23, 12, 0, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BTCUSDT", "BTCUSDT"),
        ("btcusdt", "BTCUSDT"),
        ("BTC/USDT:USDT", "BTCUSDT"),
        ("BTC/USDT", "BTCUSDT"),
        ("1000PEPEUSDT", "1000PEPEUSDT"),
        ("BTC/USDT:USDC", None),
        ("BTC/BUSD:BUSD", None),
        ("USDT", None),
        ("BTC-USDT", None),
        ("BTC USDT", None),
        ("BTCUSD", None),
        ("", None),
        ("ВТСUSDT", None),
        (42, None),
    ],
)
def test_normalize_symbol_table(raw: object, expected: str | None) -> None:
    assert normalize_symbol(raw) == expected


def test_ccxt_symbol_round_trip() -> None:
    assert to_ccxt_symbol("BTCUSDT") == "BTC/USDT:USDT"
    assert from_ccxt_symbol("BTC/USDT:USDT") == "BTCUSDT"
    assert from_ccxt_symbol(to_ccxt_symbol("1000PEPEUSDT")) == "1000PEPEUSDT"
    with pytest.raises(ValueError, match="not a symbol"):
        to_ccxt_symbol("USDT")


@given(base=st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True))
@settings(max_examples=50)
def test_ccxt_symbol_round_trip_property(base: str) -> None:
    assert from_ccxt_symbol(to_ccxt_symbol(base + "USDT")) == base + "USDT"


def test_ccxt_form_on_the_wire_is_normalised() -> None:
    (sig,) = parse_frame(frame(symbol="ETH/USDT:USDT")).signals
    assert sig.symbol == "ETHUSDT"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": _DROP}, RejectReason.MISSING_FIELD),
        ({"timestamp": _DROP}, RejectReason.MISSING_FIELD),
        ({"id": ""}, RejectReason.INVALID_ID),
        ({"id": 123}, RejectReason.INVALID_ID),
        ({"id": "a" * 65}, RejectReason.INVALID_ID),
        ({"id": "has space"}, RejectReason.INVALID_ID),
        ({"id": "-leading"}, RejectReason.INVALID_ID),
        ({"symbol": "BTC-USDT"}, RejectReason.INVALID_SYMBOL),
        ({"symbol": None}, RejectReason.INVALID_SYMBOL),
        ({"exchange": "Binance"}, RejectReason.INVALID_EXCHANGE),
        ({"exchange": "okx"}, RejectReason.INVALID_EXCHANGE),
        ({"action": "buy"}, RejectReason.INVALID_ACTION),
        ({"action": "HOLD"}, RejectReason.INVALID_ACTION),
        ({"score_week": True}, RejectReason.INVALID_SCORE),
        ({"score_week": "71.5"}, RejectReason.INVALID_SCORE),
        ({"score_month": None}, RejectReason.INVALID_SCORE),
        ({"score_month": 1e12}, RejectReason.INVALID_SCORE),
        ({"timestamp": "2026-11-23T12:00:03"}, RejectReason.INVALID_TIMESTAMP),
        ({"timestamp": "yesterday"}, RejectReason.INVALID_TIMESTAMP),
        ({"timestamp": 1763899203}, RejectReason.INVALID_TIMESTAMP),
        ({"type": "hello"}, RejectReason.UNKNOWN_TYPE),
        ({"type": _DROP}, RejectReason.UNKNOWN_TYPE),
    ],
)
def test_invalid_field_rejects_the_signal_with_its_reason(
    changes: dict[str, Any], reason: RejectReason
) -> None:
    assert only_rejection(parse_frame(frame(**changes))).reason is reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_score_literals_reject_the_frame(literal: str) -> None:
    text = frame().replace("71.5", literal)
    assert only_rejection(parse_frame(text)).reason is RejectReason.INVALID_JSON


def test_rejection_carries_signal_id_when_the_id_is_valid() -> None:
    rej = only_rejection(parse_frame(frame(action="HOLD")))
    assert rej.signal_id == "9f1c2"
    assert "HOLD" in rej.raw_excerpt


def test_unknown_fields_are_ignored_and_reported_by_default() -> None:
    (sig,) = parse_frame(frame(source="model-7", zeta=1)).signals
    assert sig.ignored_fields == ("source", "zeta")


def test_unknown_fields_reject_in_strict_mode() -> None:
    params = SignalParams(reject_unknown_fields=True)
    rej = only_rejection(parse_frame(frame(source="x"), params))
    assert rej.reason is RejectReason.UNKNOWN_FIELD


def test_duplicate_json_key_rejects_the_frame() -> None:
    text = frame()[:-1] + ', "action": "SELL"}'
    assert only_rejection(parse_frame(text)).reason is RejectReason.DUPLICATE_KEY


def test_frame_over_size_limit_is_rejected_before_parsing() -> None:
    params = SignalParams(max_frame_bytes=100)
    assert only_rejection(parse_frame(frame(), params)).reason is RejectReason.FRAME_TOO_LARGE
    big = frame(pad="x" * 70_000)
    assert only_rejection(parse_frame(big)).reason is RejectReason.FRAME_TOO_LARGE
    assert only_rejection(parse_frame(big.encode())).reason is RejectReason.FRAME_TOO_LARGE


def test_multibyte_text_is_measured_in_bytes() -> None:
    params = SignalParams(max_frame_bytes=300)
    text = json.dumps({**GOOD, "note": "é" * 100}, ensure_ascii=False)
    assert len(text) < 300 < len(text.encode())
    assert only_rejection(parse_frame(text, params)).reason is RejectReason.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", RejectReason.NOT_UTF8),
        ("", RejectReason.INVALID_JSON),
        ("{", RejectReason.INVALID_JSON),
        ("[1, 2]", RejectReason.NOT_AN_OBJECT),
        ('"signal"', RejectReason.NOT_AN_OBJECT),
        ('{"type": "signals", "signals": {}}', RejectReason.BATCH_NOT_A_LIST),
        ('{"type": "signals", "signals": []}', RejectReason.EMPTY_BATCH),
        ("[" * 30_000 + "]" * 30_000, RejectReason.INVALID_JSON),
    ],
)
def test_malformed_frames_are_rejected_with_reason(raw: str | bytes, reason: RejectReason) -> None:
    assert only_rejection(parse_frame(raw)).reason is reason


def test_future_timestamp_rejected_only_when_now_is_given() -> None:
    now = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    rej = only_rejection(parse_frame(frame(), now=now))
    assert rej.reason is RejectReason.FUTURE_TIMESTAMP
    within_skew = now.replace(hour=12) + timedelta(seconds=3) - timedelta(seconds=60)
    assert len(parse_frame(frame(), now=within_skew).signals) == 1
    assert len(parse_frame(frame()).signals) == 1


def batch(items: Sequence[object]) -> str:
    return json.dumps({"type": "signals", "signals": items})


def test_batch_keeps_good_signals_and_rejects_only_the_bad_one() -> None:
    good2 = {**GOOD, "id": "b2", "symbol": "ETHUSDT"}
    bad = {**GOOD, "id": "b3", "exchange": "okx"}
    no_type = {k: v for k, v in GOOD.items() if k != "type"} | {"id": "b4", "symbol": "XRPUSDT"}
    result = parse_frame(batch([GOOD, bad, good2, 7, no_type]))
    assert [s.id for s in result.signals] == ["9f1c2", "b2", "b4"]
    assert [(r.reason, r.signal_id) for r in result.rejections] == [
        (RejectReason.INVALID_EXCHANGE, "b3"),
        (RejectReason.NOT_AN_OBJECT, None),
    ]


def test_batch_repeated_id_keeps_the_first() -> None:
    result = parse_frame(batch([GOOD, {**GOOD, "symbol": "ETHUSDT"}]))
    assert [s.symbol for s in result.signals] == ["BTCUSDT"]
    assert result.rejections[0].reason is RejectReason.DUPLICATE_ID


def test_batch_item_with_other_type_is_rejected() -> None:
    result = parse_frame(batch([{**GOOD, "type": "signals"}]))
    assert only_rejection(result).reason is RejectReason.UNKNOWN_TYPE


def test_batch_longer_than_limit_is_rejected_whole() -> None:
    params = SignalParams(max_batch=2)
    items = [{**GOOD, "id": f"s{i}"} for i in range(3)]
    assert only_rejection(parse_frame(batch(items), params)).reason is RejectReason.BATCH_TOO_LARGE


def test_excerpt_is_bounded() -> None:
    rej = only_rejection(parse_frame(frame(action="X" * 5000)))
    assert len(rej.raw_excerpt) <= 200


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_frame(frame(), now=datetime(2026, 1, 1))  # noqa: DTZ001


# ---------------------------------------------------------------- fuzz: never raises

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    json_leaf,
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float),
    st.sampled_from(["BTCUSDT", "binance", "bybit", "BUY", "SELL", "2026-01-01T00:00:00Z", ""]),
)
signal_like = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "type",
            "id",
            "symbol",
            "exchange",
            "action",
            "score_week",
            "score_month",
            "timestamp",
        )
    },
)


def assert_well_formed(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    for sig in result.signals:
        assert isinstance(sig.score_week, Decimal) and sig.score_week.is_finite()
        assert sig.timestamp.tzinfo is not None
    for rej in result.rejections:
        assert isinstance(rej.reason, RejectReason)
        assert len(rej.raw_excerpt) <= 200


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_fuzz_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_well_formed(parse_frame(raw))


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_fuzz_arbitrary_text_never_raises(raw: str) -> None:
    assert_well_formed(parse_frame(raw))


@given(json_values)
@settings(max_examples=100)
def test_fuzz_arbitrary_json_never_raises(value: object) -> None:
    assert_well_formed(parse_frame(json.dumps(value)))


@given(st.lists(signal_like, max_size=5), st.booleans())
@settings(max_examples=150)
def test_fuzz_signal_shaped_objects_never_raise_and_account_for_every_item(
    items: list[dict[str, Any]], as_batch: bool
) -> None:
    if as_batch:
        result = parse_frame(batch(list(items)))
        assert_well_formed(result)
        if items:
            assert len(result.signals) + len(result.rejections) == len(items)
        return
    for item in items:
        result = parse_frame(json.dumps({**item, "type": "signal"}))
        assert_well_formed(result)
        assert len(result.signals) + len(result.rejections) == 1


def test_the_strict_setting_rejects_fields_beyond_the_contract():
    from core.config import load_settings
    from core.services.signals import signal_params

    frame = json.dumps(
        {
            "type": "signal",
            "id": "x1",
            "symbol": "BTCUSDT",
            "exchange": "binance",
            "action": "BUY",
            "score_week": 70,
            "score_month": 60,
            "timestamp": "2026-11-23T12:00:03Z",
            "leverage": 50,
        }
    )
    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    lenient = parse_frame(frame, signal_params(load_settings()), now=now)
    strict = parse_frame(
        frame, signal_params(load_settings(signal_reject_unknown_fields=True)), now=now
    )
    assert len(lenient.signals) == 1 and not lenient.rejections
    assert not strict.signals and "leverage" in strict.rejections[0].detail


@pytest.mark.parametrize(
    "changes",
    [
        {"score_week": 99_999_999_999},
        {"score_week": 100.01},
        {"score_month": -0.5},
        {"score_month": 1e6},
    ],
)
def test_score_outside_the_configured_range_is_rejected_as_out_of_range(
    changes: dict[str, Any],
) -> None:
    rejection = only_rejection(parse_frame(frame(**changes)))
    assert rejection.reason is RejectReason.SCORE_OUT_OF_RANGE
    assert "0..100" in rejection.detail


def test_score_range_bounds_are_inclusive_and_configurable() -> None:
    (sig,) = parse_frame(frame(score_week=100, score_month=0)).signals
    assert sig.score_week == Decimal(100)
    wide = SignalParams(score_min=Decimal(-10), score_max=Decimal(1000))
    (sig,) = parse_frame(frame(score_week=999, score_month=-10), wide).signals
    assert sig.score_week == Decimal(999)
    assert only_rejection(parse_frame(frame(score_week=1001), wide)).reason is (
        RejectReason.SCORE_OUT_OF_RANGE
    )


def test_a_signal_for_a_venue_not_configured_is_rejected_with_its_reason():
    from core.domain.signals import SignalParams

    frame = json.dumps(
        {
            "type": "signal",
            "id": "x1",
            "symbol": "BTCUSDT",
            "exchange": "bybit",
            "action": "BUY",
            "score_week": 50,
            "score_month": 50,
            "timestamp": "2026-01-01T00:00:00Z",
        }
    )
    only_binance = parse_frame(frame, SignalParams(venues=frozenset({"binance"})))
    assert only_binance.signals == ()
    [rejection] = only_binance.rejections
    assert rejection.reason == RejectReason.VENUE_NOT_CONFIGURED and rejection.signal_id == "x1"
    both = parse_frame(frame, SignalParams(venues=frozenset({"binance", "bybit"})))
    assert [s.id for s in both.signals] == ["x1"]
    assert [s.id for s in parse_frame(frame).signals] == ["x1"]  # no venue list: any venue
