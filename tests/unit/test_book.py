"""The console's numbers: stop owner, distance, PnL, precision, ages, totals."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core.domain import book
from core.domain.orders import ExchangeOrder, OrderSide

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
D = Decimal


def stop(
    trigger: str, qty: str = "0.01", client_id: str | None = "v1-ab-s0", **kw
) -> ExchangeOrder:
    return ExchangeOrder(
        id=kw.pop("id", "1"),
        client_id=client_id,
        symbol=kw.pop("symbol", "BTCUSDT"),
        side=kw.pop("side", OrderSide.SELL),
        type="STOP_MARKET",
        reduce_only=True,
        close_position=False,
        is_conditional=True,
        trigger_price=D(trigger),
        quantity=D(qty),
        **kw,
    )


def test_stop_owner_follows_the_purpose_and_sequence_of_the_client_id():
    assert book.stop_owner("stop", 0) == "entry"
    assert book.stop_owner("stop", 3) == "trailing"
    assert book.stop_owner("protection", 0) == "protection"
    assert book.stop_owner(None, 0) == "foreign"


def test_pnl_and_stop_distance_read_the_side():
    assert book.unrealised_pnl("long", D("2"), D("100"), D("110")) == D("20")
    assert book.unrealised_pnl("short", D("2"), D("100"), D("110")) == D("-20")
    assert book.unrealised_pnl("long", D("2"), None, D("110")) is None
    assert book.stop_distance_percent("long", D("98"), D("100")) == D("2")
    assert book.stop_distance_percent("short", D("102"), D("100")) == D("2")
    assert book.stop_distance_percent("long", D("98"), None) is None


def test_the_live_stop_is_the_covering_one_and_none_without_a_stop():
    orders = [stop("58000", qty="0.005", id="1"), stop("58500", qty="0.01", id="2")]
    live = book.live_stop("BTCUSDT", "long", D("0.01"), orders)
    assert live is not None and live.price == D("58500") and live.covers
    short = book.live_stop("BTCUSDT", "short", D("0.01"), orders)  # sell stops close a long only
    assert short is None
    partial = book.live_stop("BTCUSDT", "long", D("0.01"), orders[:1])
    assert partial is not None and not partial.covers


def test_a_position_newer_than_the_read_of_the_orders_is_not_judged_by_it():
    read = NOW - timedelta(seconds=2)
    assert book.judged_by(NOW - timedelta(seconds=5), read)
    assert not book.judged_by(NOW, read)
    assert not book.judged_by(NOW, None)
    assert book.judged_by(None, read)


def test_unprotected_time_prefers_the_durable_mark():
    assert book.unprotected_seconds(False, NOW, NOW, NOW) is None
    assert book.unprotected_seconds(True, NOW - timedelta(seconds=30), None, NOW) == 30
    assert book.unprotected_seconds(True, None, NOW - timedelta(seconds=4), NOW) == 4
    assert book.unprotected_seconds(True, None, None, NOW) == 0


def test_numbers_take_the_symbols_precision():
    assert book.decimals_of(D("0.10")) == 1
    assert book.decimals_of(D("1")) == 0
    assert book.decimals_of(D("0.000010")) == 5
    assert book.decimals_of(None) is None
    assert book.format_number(D("58800"), 1) == "58800.0"
    assert book.format_number(D("0.15000000"), None) == "0.15"
    assert book.format_number(D("3"), 2, sign=True) == "+3.00"
    assert book.format_number(D("-3"), 2, sign=True) == "-3.00"
    assert book.format_number(None, 2) == "—"
    assert book.format_number(D("-0.0004"), 2, sign=True) == "0.00"


def test_ages_are_short():
    assert book.format_age(42) == "42s"
    assert book.format_age(185) == "3m 05s"
    assert book.format_age(7620) == "2h 07m"
    assert book.format_age(3 * 86400 + 4 * 3600) == "3d 04h"
    assert book.format_age(None) == "—"


def test_totals_count_only_active_positions_without_a_stop():
    lines = [
        book.BookLine("active", D("100"), D("5"), True),
        book.BookLine("active", D("50"), D("-2"), False),
        book.BookLine("pending_entry", None, None, False),
    ]
    t = book.totals(lines)
    assert (t.positions, t.exposure, t.unrealised_pnl, t.without_stop) == (3, D(150), D(3), 1)


@given(st.decimals(min_value=D("0.00000001"), max_value=D("1000"), places=8))
def test_a_price_printed_with_its_tick_places_round_trips_when_on_the_grid(tick):
    places = book.decimals_of(tick)
    assert places is not None
    price = tick * 7
    assert D(book.format_number(price, places)) == price
