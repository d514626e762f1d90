"""Hostile and malformed signal frames never crash the parser or the storing path.

Properties over generated frames: ``parse_frame`` never raises; a frame that yields no
signal yields at least one rejection (nothing vanishes silently); every accepted signal is
within the parser's limits; every rejection's excerpt is bounded. The storing path
(``store_frame``) commits every rejection as a ``signal_rejected`` event and never raises.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core.db.models import Event, Signal
from core.domain.signals import SignalParams, parse_frame
from core.domain.waves import WaveParams
from core.services.signals import store_frame

PARAMS = SignalParams()
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

HOSTILE_TEXT = st.sampled_from(
    [
        "'; DROP TABLE signals; --",
        "BTCUSDT' OR '1'='1",
        "\x00\x01\x02",
        "𝔅𝔗ℭ𝔘𝔖𝔇𝔗",
        "BTC\u202eTDSU",
        "A" * 10_000,
        "${jndi:ldap://x}",
        "<script>alert(1)</script>",
        "NaN",
        "-Infinity",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    HOSTILE_TEXT,
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
FIELDS = ("id", "symbol", "exchange", "action", "score_week", "score_month", "timestamp")
GOOD = {
    "id": "s-1",
    "symbol": "BTCUSDT",
    "exchange": "binance",
    "action": "BUY",
    "score_week": 80,
    "score_month": 75,
    "timestamp": "2026-01-01T11:59:00Z",
}


def _signal_with(field: str, value: object) -> dict[str, object]:
    return {**GOOD, field: value}


def _frames() -> st.SearchStrategy[str | bytes]:
    mutated = st.builds(_signal_with, st.sampled_from(FIELDS), JSONISH)
    return st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=2000),
        JSONISH.map(lambda v: json.dumps(v, default=str)),
        mutated.map(json.dumps),
        st.lists(mutated, max_size=20).map(json.dumps),
        st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),  # nesting
        st.integers(min_value=1, max_value=3).map(lambda n: json.dumps([GOOD] * (200 * n))),
        st.just('{"id": "a", "id": "b"}'),
        st.just(json.dumps({**GOOD, "score_week": "1e999999"})),
        st.just(b"\xff\xfe\xfa not utf-8"),
    )


def _check(result) -> None:
    for signal in result.signals:
        assert len(signal.id) <= PARAMS.max_id_length
        assert len(signal.symbol) <= PARAMS.max_symbol_length
        assert signal.score_week.is_finite() and signal.score_month.is_finite()
    for rejection in result.rejections:
        assert len(rejection.raw_excerpt) <= 200
        assert rejection.reason


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames())
def test_any_frame_is_parsed_without_raising_and_nothing_vanishes_silently(frame):
    result = parse_frame(frame, PARAMS, now=NOW)
    _check(result)
    assert result.signals or result.rejections


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), JSONISH)
def test_a_signal_with_any_field_replaced_is_either_valid_or_rejected_with_a_reason(field, value):
    result = parse_frame(json.dumps(_signal_with(field, value)), PARAMS, now=NOW)
    _check(result)
    assert len(result.signals) + len(result.rejections) >= 1


def test_an_oversized_frame_and_a_nesting_bomb_are_rejected_not_parsed():
    assert parse_frame("[" + " " * (PARAMS.max_frame_bytes + 1) + "]", PARAMS).rejections
    bomb = parse_frame("[" * 100_000 + "]" * 100_000, PARAMS)
    assert not bomb.signals and bomb.rejections


def test_an_sql_shaped_symbol_is_rejected_and_never_reaches_a_query():
    result = parse_frame(json.dumps(_signal_with("symbol", "'; DROP TABLE signals; --")), PARAMS)
    assert not result.signals and result.rejections


@pytest.mark.integration
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=_frames())
@example(frame=b"\x00")  # PostgreSQL text/jsonb refuse NUL: found by this test once
@example(frame=json.dumps(_signal_with("id", "a\x00b")))
@example(frame=json.dumps(_signal_with("symbol", "BTC\x00USDT")))
def test_storing_any_frame_commits_every_rejection_as_an_event_and_never_raises(clean_db, frame):
    result = parse_frame(frame, PARAMS, now=NOW)
    from core.db.session import unit_of_work

    with unit_of_work() as s:
        events_before = s.scalar(
            select(func.count()).select_from(Event).where(Event.type == "signal_rejected")
        )
    report = store_frame(result, now=NOW, params=WaveParams(), ingest="fuzz")
    with unit_of_work() as s:
        events_after = s.scalar(
            select(func.count()).select_from(Event).where(Event.type == "signal_rejected")
        )
        stored = s.scalar(select(func.count()).select_from(Signal))
    assert report.rejected == len(result.rejections)
    assert events_after - events_before == len(result.rejections)
    assert stored is not None and stored >= len(report.stored)
    assert all(isinstance(s.score_week, Decimal) for s in result.signals)
