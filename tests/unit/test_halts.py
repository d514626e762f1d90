"""Halts and venue outages as pure decisions, and the error taxonomy that feeds them."""

from datetime import UTC, datetime, timedelta
from typing import Any

import ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.halts import (
    ALL_VENUES,
    HaltSource,
    HaltView,
    OpeningBlock,
    opening_block,
    outage_warrants_pause,
)
from core.exchange import errors as e

T0 = datetime(2026, 12, 1, tzinfo=UTC)
VENUES = st.sampled_from(["binance", "bybit", ALL_VENUES])
HALT_VIEWS = st.lists(st.builds(HaltView, st.sampled_from(list(HaltSource)), VENUES), max_size=6)


def test_nothing_in_force_blocks_nothing():
    assert opening_block([], "binance") is None


def test_an_operator_halt_of_every_venue_blocks_each_venue():
    halt = HaltView(HaltSource.OPERATOR, ALL_VENUES)
    assert opening_block([halt], "binance") is OpeningBlock.HALTED
    assert opening_block([halt], "bybit") is OpeningBlock.HALTED


def test_a_refused_key_halts_only_its_own_venue():
    halt = HaltView(HaltSource.AUTH, "binance")
    assert opening_block([halt], "binance") is OpeningBlock.HALTED
    assert opening_block([halt], "bybit") is None


def test_a_halt_wins_over_a_maintenance_pause():
    pause = HaltView(HaltSource.MAINTENANCE, "bybit")
    assert opening_block([pause], "bybit") is OpeningBlock.PAUSED
    both = [pause, HaltView(HaltSource.OPERATOR, ALL_VENUES)]
    assert opening_block(both, "bybit") is OpeningBlock.HALTED


@given(HALT_VIEWS, st.sampled_from(["binance", "bybit"]))
def test_a_venue_opens_exactly_when_no_halt_applies_to_it(halt_views, venue):
    applies = [h for h in halt_views if h.scope in (ALL_VENUES, venue)]
    block = opening_block(halt_views, venue)
    assert (block is None) == (not applies)
    if any(h.source is not HaltSource.MAINTENANCE for h in applies):
        assert block is OpeningBlock.HALTED


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=5_000))
def test_an_outage_pauses_once_it_has_lasted_the_threshold(seconds, threshold):
    now = T0 + timedelta(seconds=seconds)
    assert outage_warrants_pause(T0, now, timedelta(seconds=threshold)) == (seconds >= threshold)


def test_no_outage_never_pauses():
    assert not outage_warrants_pause(None, T0, timedelta(seconds=1))


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.AuthenticationError('binanceusdm {"code":-2015,"msg":"Invalid API-key"}'),
        ccxt.AuthenticationError('binanceusdm {"code":-2014,"msg":"API-key format invalid."}'),
        ccxt.AuthenticationError('binanceusdm {"code":-1022,"msg":"Signature"}'),
        ccxt.ExchangeError('bybit {"retCode":10003,"retMsg":"API key is invalid."}'),
        ccxt.ExchangeError('bybit {"retCode":10004,"retMsg":"error sign!"}'),
        ccxt.ExchangeError('bybit {"retCode":10005,"retMsg":"Permission denied"}'),
        ccxt.ExchangeError('bybit {"retCode":"33004","retMsg":"Your api key has expired."}'),
        ccxt.PermissionDenied("no permission"),
        ccxt.AuthenticationError("bad key"),
    ],
)
def test_every_refusal_of_the_key_is_an_authentication_failure(exc):
    assert isinstance(e.classify(exc), e.AuthenticationFailed)
    assert isinstance(e.classify(exc, mutating=True), e.AuthenticationFailed)


def test_maintenance_and_unavailability_on_reads_are_told_apart():
    assert type(e.classify(ccxt.OnMaintenance("system maintenance"))) is e.VenueMaintenance
    assert type(e.classify(ccxt.ExchangeNotAvailable("503"))) is e.VenueUnavailable
    bybit = ccxt.ExchangeError('bybit {"retCode":10016,"retMsg":"Service is restarting"}')
    assert type(e.classify(bybit)) is e.VenueUnavailable
    assert e.classify(bybit).retryable


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.OnMaintenance("system maintenance"),
        ccxt.ExchangeNotAvailable("503"),
        ccxt.ExchangeError('bybit {"retCode":10016,"retMsg":"Service is restarting"}'),
    ],
)
def test_an_unavailable_venue_on_a_create_or_cancel_is_still_an_unknown_outcome(exc):
    assert type(e.classify(exc, mutating=True)) is e.OutcomeUnknown


def _state(source: str, scope: str = ALL_VENUES) -> Any:
    from core.services.halts import HaltState

    return HaltState(1, scope, source, "drill", "cli:ops@host", T0)


def test_the_live_view_says_open_halted_or_paused():
    from shell.runtime.halt_watch import describe

    assert describe([]) == "open"
    halted = describe([_state("operator")])
    assert halted.startswith("HALTED") and "every venue" in halted and "cli:ops@host" in halted
    assert "drill" in halted
    paused = describe([_state("maintenance", "bybit")])
    assert paused.startswith("PAUSED (maintenance halt of bybit")
    assert describe([_state("maintenance", "bybit"), _state("auth", "binance")]).startswith(
        "HALTED"
    )
