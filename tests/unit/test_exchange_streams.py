"""Mark-price frames as the venues send them, turned into the ingest's ticks."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.exchange.streams import BybitTickerMarks, binance_mark_ticks, linear_usdt_symbols


def test_only_active_linear_usdt_perpetuals_are_watched():
    markets = {
        "BTC/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT", "active": True},
        "ETH/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT"},
        "LUNA/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT", "active": False},
        "BTC/USDC:USDC": {"swap": True, "linear": True, "settle": "USDC", "active": True},
        "BTC/USD:BTC": {"swap": True, "linear": False, "settle": "BTC", "active": True},
        "BTC/USDT": {"spot": True, "settle": None, "active": True},
    }
    assert linear_usdt_symbols(markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]


def mark_event(symbol, price, at):
    """One element of Binance's ``!markPrice@arr`` frame, every field it carries."""
    return {
        "e": "markPriceUpdate",
        "E": at,
        "s": symbol,
        "p": price,
        "ap": price,
        "P": price,
        "i": price,
        "r": "0.00010000",
        "T": 1_700_000_000_000,
    }


def test_a_raw_all_market_frame_gives_every_symbol_with_its_price_text_and_venue_time():
    frame = json.dumps([mark_event("BTCUSDT", "60000.10", 1), mark_event("ETHUSDT", "3000", 2)])
    assert binance_mark_ticks(frame) == [("BTCUSDT", "60000.10", 1), ("ETHUSDT", "3000", 2)]
    assert binance_mark_ticks(frame.encode()) == binance_mark_ticks(frame)


def test_a_combined_stream_frame_is_unwrapped():
    frame = {"stream": "!markPrice@arr@1s", "data": [mark_event("BTCUSDT", "1.5", 7)]}
    assert binance_mark_ticks(json.dumps(frame)) == [("BTCUSDT", "1.5", 7)]


@pytest.mark.parametrize(
    "frame",
    [
        '{"result":null,"id":1}',  # the subscription's answer
        '{"error":{"code":2,"msg":"Invalid request"},"id":1}',
        "[]",
        '[{"e":"markPriceUpdate","s":"BTCUSDT"}]',  # no price: skipped, not an error
        '[1, null, "x"]',
    ],
)
def test_anything_but_mark_events_is_no_ticks(frame):
    assert binance_mark_ticks(frame) == []


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
            st.integers(min_value=0, max_value=2**53),
        ),
        max_size=50,
    )
)
def test_every_well_formed_event_is_one_tick_in_frame_order(ticks):
    frame = json.dumps([mark_event(*t) for t in ticks])
    assert binance_mark_ticks(frame) == ticks


def test_bybit_tickers_become_ticks_in_the_venues_own_symbols():
    class Pro:
        markets = {"BTC/USDT:USDT": {"id": "BTCUSDT"}, "ETH/USDT:USDT": {"id": "ETHUSDT"}}

    source = BybitTickerMarks(Pro())
    tickers = {
        "BTC/USDT:USDT": {"markPrice": 60000.5, "timestamp": 5},
        "ETH/USDT:USDT": {"markPrice": None, "timestamp": 6},  # a delta without the mark
        "XRP/USDT:USDT": {"markPrice": 0.5, "timestamp": 7},  # not a market it knows
    }
    assert source._ticks(tickers) == [("BTCUSDT", "60000.5", 5)]
