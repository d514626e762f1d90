"""The adapter against the paper exchange through real ccxt."""

from decimal import Decimal

import pytest

from core.exchange import errors
from core.exchange.adapter import ExchangeAdapter
from core.exchange.factory import build_exchange

pytestmark = pytest.mark.integration


@pytest.fixture
def adapter(sim, paper_exchange):
    return ExchangeAdapter(paper_exchange, "binance")


def open_long(adapter, qty="0.01", cid="v1-t-e0"):
    return adapter.create_market_order("BTCUSDT", "buy", Decimal(qty), cid)


def test_market_rules_are_decimal_and_realistic(adapter):
    rules = adapter.rules("BTCUSDT")
    assert rules.tick_size > 0 and rules.step_size > 0
    assert isinstance(rules.min_notional, Decimal) and rules.min_notional > 0


def test_entry_stop_lookup_and_cancel_round_trip(adapter):
    entry = open_long(adapter)
    assert entry.is_filled and entry.filled == Decimal("0.01")
    mark = adapter.mark_price("BTCUSDT")
    stop = adapter.create_stop(
        "BTCUSDT",
        "sell",
        Decimal("0.01"),
        (mark * Decimal("0.98")).quantize(Decimal("0.1")),
        "v1-t-s0",
    )
    assert stop.conditional and stop.reduce_only and stop.type == "stop_market"
    found = adapter.fetch_order("BTCUSDT", "v1-t-s0", conditional=True)
    assert found is not None and found.id == stop.id and found.is_open
    assert adapter.fetch_order("BTCUSDT", "v1-t-e0").is_filled
    assert adapter.fetch_order("BTCUSDT", "v1-never-sent") is None
    assert adapter.cancel_order("BTCUSDT", stop.id, conditional=True) is True
    assert adapter.cancel_order("BTCUSDT", stop.id, conditional=True) is False


def test_open_orders_cover_regular_and_conditional_in_two_calls(adapter, sim):
    open_long(adapter)
    mark = adapter.mark_price("BTCUSDT")
    adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * Decimal("0.9"), "v1-t-s0")
    before = adapter.calls
    orders = adapter.open_orders()
    assert adapter.calls - before == 2
    assert [o.client_id for o in orders] == ["v1-t-s0"]


def test_positions_are_read_in_one_call(adapter):
    open_long(adapter)
    adapter.create_market_order("ETHUSDT", "sell", Decimal("0.1"), "v2-t-e0")
    before = adapter.calls
    positions = {p.symbol: p for p in adapter.positions()}
    assert adapter.calls - before == 1
    assert positions["BTCUSDT"].side == "long" and positions["ETHUSDT"].side == "short"
    assert positions["ETHUSDT"].quantity == Decimal("0.1")


def test_stop_that_would_trigger_at_once_is_refused_by_kind(adapter):
    open_long(adapter)
    mark = adapter.mark_price("BTCUSDT")
    with pytest.raises(errors.WouldTriggerImmediately):
        adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * 2, "v1-t-s0")


def test_reduce_only_without_position_is_refused_by_kind(adapter):
    with pytest.raises(errors.ReduceOnlyRejected):
        adapter.create_market_order("BTCUSDT", "sell", Decimal("0.01"), "v1-t-c0", reduce_only=True)


def test_below_minimum_and_unknown_symbol_are_permanent(adapter):
    with pytest.raises(errors.BelowMinimum):
        adapter.create_market_order("BTCUSDT", "buy", Decimal("0.001"), "v1-t-e0")
    with pytest.raises(errors.SymbolUnavailable):
        adapter.rules("NOPEUSDT")


def test_leverage_setup_is_idempotent(adapter):
    adapter.ensure_trading_setup("BTCUSDT", 5, "cross")
    calls = adapter.calls
    adapter.ensure_trading_setup("BTCUSDT", 5, "cross")
    assert adapter.calls == calls


def test_trades_give_exit_prices_with_fees(adapter):
    open_long(adapter)
    adapter.create_market_order("BTCUSDT", "sell", Decimal("0.01"), "v1-t-c0", reduce_only=True)
    trades = adapter.trades("BTCUSDT")
    assert len(trades) == 2
    assert all(t.fee > 0 for t in trades)
    assert adapter.positions() == []


def test_wrong_keys_fail_as_authentication(sim):
    bad = ExchangeAdapter(build_exchange("paper", url=sim.url, api_key="paper", api_secret="wrong"))
    with pytest.raises(errors.AuthenticationFailed):
        bad.free_balance()
