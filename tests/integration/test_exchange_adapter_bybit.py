"""The adapter's scenarios on both dialects of the paper exchange (Binance USD-M and Bybit
v5 linear) through real ccxt, and what only Bybit needs: pagination counted in requests,
hedge-mode position indexes, the stop placed right after an entry, lookups that outlive
the realtime window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.domain.orders import stops_for
from core.exchange import errors
from core.exchange.adapter import ExchangeAdapter
from core.exchange.dialect import DialectOptions

pytestmark = pytest.mark.integration
FAST = DialectOptions(visibility_timeout=1.0)


@dataclass
class Venue:
    """One dialect of the simulator and an adapter on it."""

    dialect: str
    sim: Any
    adapter: ExchangeAdapter
    client_factory: Callable[..., Any]

    def order_posts(self) -> list[dict[str, Any]]:
        path = "/v5/order/create" if self.dialect == "bybit" else "/fapi/v1/"
        return [
            r
            for r in self.sim.requests()["requests"]
            if r["method"] == "POST" and r["path"].startswith(path)
        ]

    def new_adapter(self, **client_kw: Any) -> ExchangeAdapter:
        return ExchangeAdapter(self.client_factory(**client_kw), self.dialect, options=FAST)


@pytest.fixture(params=["binance", "bybit"])
def venue(request: pytest.FixtureRequest) -> Venue:
    if request.param == "binance":
        sim = request.getfixturevalue("sim")
        factory = request.getfixturevalue("paper_exchange_factory")
        client = request.getfixturevalue("paper_exchange")
    else:
        sim = request.getfixturevalue("bybit_sim")
        factory = request.getfixturevalue("bybit_exchange_factory")
        client = factory()
    return Venue(request.param, sim, ExchangeAdapter(client, request.param, options=FAST), factory)


@pytest.fixture
def bybit(bybit_sim: Any, bybit_exchange_factory: Any) -> Venue:
    client = bybit_exchange_factory()
    return Venue(
        "bybit", bybit_sim, ExchangeAdapter(client, "bybit", options=FAST), bybit_exchange_factory
    )


def open_long(adapter: ExchangeAdapter, qty: str = "0.01", cid: str = "v1-t-e0") -> Any:
    return adapter.create_market_order("BTCUSDT", "buy", Decimal(qty), cid)


def stop_below(adapter: ExchangeAdapter, fraction: str = "0.98") -> Decimal:
    return (adapter.mark_price("BTCUSDT") * Decimal(fraction)).quantize(Decimal("0.1"))


# -- the same scenarios on both venues -------------------------------------------------------


def test_market_rules_are_decimal_and_realistic(venue: Venue) -> None:
    rules = venue.adapter.rules("BTCUSDT")
    assert (rules.tick_size, rules.step_size) == (Decimal("0.1"), Decimal("0.001"))
    assert rules.min_qty == Decimal("0.001") and rules.min_notional == Decimal(100)
    assert rules.max_qty == Decimal(120)  # the market-order maximum bounds entries


def test_prices_and_balance(venue: Venue) -> None:
    venue.sim.set_price("ETHUSDT", "3100.5")
    assert venue.adapter.mark_price("ETHUSDT") == Decimal("3100.5")
    marks = venue.adapter.mark_prices()
    assert marks["ETHUSDT"] == Decimal("3100.5") and len(marks) >= 24
    assert venue.adapter.free_balance() == Decimal(10000)


def test_entry_stop_lookup_and_cancel_round_trip(venue: Venue) -> None:
    adapter = venue.adapter
    entry = open_long(adapter)
    assert entry.is_filled and entry.filled == Decimal("0.01")
    assert entry.average == Decimal(60000)
    stop = adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), stop_below(adapter), "v1-t-s0")
    assert stop.conditional and stop.reduce_only and stop.type == "stop_market"
    assert stop.trigger_price == Decimal("58800") and stop.is_open
    found = adapter.fetch_order("BTCUSDT", "v1-t-s0", conditional=True)
    assert found is not None and found.id == stop.id and found.is_open
    assert found.trigger_price == Decimal("58800") and found.amount == Decimal("0.01")
    by_id = adapter.fetch_order_by_id("BTCUSDT", stop.id, conditional=True)
    assert by_id is not None and by_id.client_id == "v1-t-s0"
    filled = adapter.fetch_order("BTCUSDT", "v1-t-e0")
    assert filled is not None and filled.is_filled
    assert adapter.fetch_order("BTCUSDT", "v1-never-sent") is None
    assert adapter.cancel_order("BTCUSDT", stop.id, conditional=True) is True
    assert adapter.cancel_order("BTCUSDT", stop.id, conditional=True) is False
    gone = adapter.fetch_order("BTCUSDT", "v1-t-s0", conditional=True)
    assert gone is not None and gone.status == "canceled"


def test_short_stop_sits_above_and_protects_the_short(venue: Venue) -> None:
    adapter = venue.adapter
    adapter.create_market_order("ETHUSDT", "sell", Decimal("0.1"), "v2-t-e0")
    trigger = (adapter.mark_price("ETHUSDT") * Decimal("1.02")).quantize(Decimal("0.01"))
    adapter.create_stop("ETHUSDT", "buy", Decimal("0.1"), trigger, "v2-t-s0")
    [position] = adapter.positions()
    assert position.side == "short" and position.quantity == Decimal("0.1")
    [stop] = stops_for(position.to_domain(), [o.to_domain() for o in adapter.open_orders()])
    assert stop.client_id == "v2-t-s0" and stop.trigger_price == trigger


def test_a_stop_fires_on_the_mark_and_closes_the_position(venue: Venue) -> None:
    adapter = venue.adapter
    open_long(adapter)
    stop = adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), stop_below(adapter), "v1-t-s0")
    venue.sim.set_price("BTCUSDT", "58000")
    assert adapter.positions() == []
    fired = adapter.fetch_order("BTCUSDT", "v1-t-s0", conditional=True)
    assert fired is not None and fired.id == stop.id and not fired.is_open
    assert adapter.open_orders() == []
    exit_trade = [t for t in adapter.trades("BTCUSDT") if t.side == "sell"]
    assert [t.price for t in exit_trade] == [Decimal(58000)]


def test_open_orders_cover_regular_and_conditional_in_a_constant_number_of_calls(
    venue: Venue,
) -> None:
    adapter = venue.adapter
    open_long(adapter)
    adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), stop_below(adapter, "0.9"), "v1-t-s0")
    before = adapter.calls
    orders = adapter.open_orders()
    # Binance: regular + algo book; Bybit: one book, one page (up to 50 orders)
    assert adapter.calls - before == (1 if venue.dialect == "bybit" else 2)
    assert [o.client_id for o in orders] == ["v1-t-s0"]
    assert orders[0].conditional and orders[0].to_domain().is_stop_loss


def test_positions_are_read_in_one_call(venue: Venue) -> None:
    if venue.dialect == "bybit":
        venue.sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    adapter = venue.adapter
    open_long(adapter)
    adapter.create_market_order("ETHUSDT", "sell", Decimal("0.1"), "v2-t-e0")
    before = adapter.calls
    positions = {p.symbol: p for p in adapter.positions()}
    assert adapter.calls - before == 1
    assert positions["BTCUSDT"].side == "long" and positions["ETHUSDT"].side == "short"
    assert positions["ETHUSDT"].quantity == Decimal("0.1")
    assert positions["BTCUSDT"].position_idx == 0


def test_stop_that_would_trigger_at_once_is_refused_by_kind(venue: Venue) -> None:
    adapter = venue.adapter
    open_long(adapter)
    with pytest.raises(errors.WouldTriggerImmediately):
        adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal(61000), "v1-t-s0")


def test_reduce_only_without_position_is_refused_by_kind(venue: Venue) -> None:
    with pytest.raises(errors.ReduceOnlyRejected):
        venue.adapter.create_market_order(
            "BTCUSDT", "sell", Decimal("0.01"), "v1-t-c0", reduce_only=True
        )


def test_below_minimum_and_unknown_symbol_are_permanent(venue: Venue) -> None:
    with pytest.raises(errors.BelowMinimum):
        venue.adapter.create_market_order("BTCUSDT", "buy", Decimal("0.001"), "v1-t-e0")
    with pytest.raises(errors.SymbolUnavailable):
        venue.adapter.rules("NOPEUSDT")
    with pytest.raises(errors.SymbolUnavailable):  # not trading (Bybit does not list it)
        venue.adapter.rules("LUNAUSDT")


def test_insufficient_funds_is_its_own_kind(venue: Venue) -> None:
    with pytest.raises(errors.InsufficientFunds):
        venue.adapter.create_market_order("BTCUSDT", "buy", Decimal("5"), "v1-t-e0")


def test_leverage_setup_is_idempotent(venue: Venue) -> None:
    venue.adapter.ensure_trading_setup("BTCUSDT", 5, "cross")
    calls = venue.adapter.calls
    venue.adapter.ensure_trading_setup("BTCUSDT", 5, "cross")
    assert venue.adapter.calls == calls
    # another process (empty cache) repeats it: "not modified" is success
    venue.new_adapter().ensure_trading_setup("BTCUSDT", 5, "cross")
    if venue.dialect == "bybit":  # Binance's positionRisk v3 carries no leverage
        open_long(venue.adapter)
        assert venue.adapter.positions()[0].leverage == 5


def test_trades_give_exit_prices_with_fees(venue: Venue) -> None:
    adapter = venue.adapter
    open_long(adapter)
    venue.sim.set_price("BTCUSDT", "61000")
    adapter.create_market_order("BTCUSDT", "sell", Decimal("0.01"), "v1-t-c0", reduce_only=True)
    trades = adapter.trades("BTCUSDT")
    assert [t.side for t in trades] == ["buy", "sell"]
    assert all(t.fee > 0 for t in trades)
    assert trades[1].price == Decimal(61000) and trades[1].realized_pnl == Decimal(10)
    assert adapter.positions() == []


def test_lost_answer_to_an_entry_is_an_unknown_outcome_and_the_lookup_finds_it(
    venue: Venue,
) -> None:
    adapter = venue.new_adapter(timeout_ms=500)
    adapter.free_balance()  # account lookups out of the way
    endpoint = "order/create" if venue.dialect == "bybit" else "order"
    venue.sim.fault(endpoint, "timeout_after_accept", method="POST", count=1, mode="drop")
    with pytest.raises(errors.OutcomeUnknown):
        open_long(adapter)
    found = adapter.fetch_order("BTCUSDT", "v1-t-e0")
    assert found is not None and found.is_filled


def test_wrong_keys_fail_as_authentication(venue: Venue) -> None:
    bad = venue.new_adapter(api_secret="wrong")
    with pytest.raises(errors.AuthenticationFailed):
        bad.free_balance()


# -- Bybit only ------------------------------------------------------------------------------


def create_posts(venue: Venue) -> list[dict[str, Any]]:
    return [r for r in venue.sim.requests()["requests"] if r["path"] == "/v5/order/create"]


def test_stop_after_entry_waits_for_the_position_instead_of_being_refused(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 300})
    open_long(bybit.adapter)
    stop = bybit.adapter.create_stop(
        "BTCUSDT", "sell", Decimal("0.01"), Decimal("58800"), "v1-t-s0"
    )
    assert stop.is_open
    posts = create_posts(bybit)
    assert len(posts) == 2 and all(r["code"] is None for r in posts)  # nothing refused
    polls = [r for r in bybit.sim.requests()["requests"] if r["path"] == "/v5/position/list"]
    assert len(polls) >= 2  # it polled until the position showed


def test_stop_from_another_process_retries_once_after_110017(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 300})
    open_long(bybit.adapter)
    other = bybit.new_adapter()  # knows nothing of the entry
    other.create_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("58800"), "v1-t-s0")
    codes = [r["code"] for r in create_posts(bybit)]
    assert codes == [None, 110017, None]
    assert len(other.open_orders()) == 1


def test_a_reduce_only_order_for_no_position_gives_up_after_the_bound(bybit: Venue) -> None:
    with pytest.raises(errors.ReduceOnlyRejected):
        bybit.adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("58800"), "v1-t-s0")
    assert [r["code"] for r in create_posts(bybit)] == [110017]  # not resent blindly


def test_positions_right_after_an_entry_read_the_adapters_own_write(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 300})
    open_long(bybit.adapter)
    [position] = bybit.adapter.positions()  # never "gone" just because the venue lags
    assert position.symbol == "BTCUSDT" and position.quantity == Decimal("0.01")


def test_open_orders_read_every_page_fifty_at_a_time(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"order_rate_limit": None})
    client = bybit.adapter.client
    for i in range(120):
        client.create_order(
            "BTC/USDT:USDT", "limit", "buy", 0.01, 50000 - i, {"clientOrderId": f"v9-t-e{i}"}
        )
    start = bybit.sim.requests()["next"]
    before = bybit.adapter.calls
    orders = bybit.adapter.open_orders()
    assert len({o.client_id for o in orders}) == 120
    assert bybit.adapter.calls - before == 3
    pages = [r for r in bybit.sim.requests(start)["requests"] if r["path"] == "/v5/order/realtime"]
    assert len(pages) == 3


def test_hedge_mode_orders_and_positions_carry_their_slot(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit.adapter.client.set_position_mode(True)
    adapter = bybit.new_adapter()
    adapter.ensure_trading_setup("BTCUSDT", 10, "cross")
    long_entry = open_long(adapter)
    short_entry = adapter.create_market_order("BTCUSDT", "sell", Decimal("0.02"), "v2-t-e0")
    assert (long_entry.position_idx, short_entry.position_idx) == (1, 2)
    long_stop = adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("58800"), "v1-t-s0")
    short_stop = adapter.create_stop("BTCUSDT", "buy", Decimal("0.02"), Decimal("61200"), "v2-t-s0")
    assert (long_stop.position_idx, short_stop.position_idx) == (1, 2)
    positions = {p.position_idx: p for p in adapter.positions()}
    assert positions[1].side == "long" and positions[2].side == "short"
    orders = [o.to_domain() for o in adapter.open_orders()]
    assert [o.client_id for o in stops_for(positions[1].to_domain(), orders)] == ["v1-t-s0"]
    assert [o.client_id for o in stops_for(positions[2].to_domain(), orders)] == ["v2-t-s0"]
    adapter.create_market_order("BTCUSDT", "sell", Decimal("0.01"), "v1-t-c0", reduce_only=True)
    assert [p.position_idx for p in adapter.positions()] == [2]


def test_a_mode_switch_under_a_running_adapter_is_learned_from_the_refusal(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    bybit.adapter.ensure_trading_setup("BTCUSDT", 10, "cross")  # learns: one-way
    bybit.adapter.client.set_position_mode(True)
    entry = open_long(bybit.adapter)
    assert entry.position_idx == 1
    assert [r["code"] for r in create_posts(bybit)] == [10001, None]


def test_an_order_older_than_the_realtime_window_is_found_in_history(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"realtime_closed_window": 1, "position_delay_ms": 0})
    open_long(bybit.adapter)
    bybit.adapter.create_market_order("ETHUSDT", "buy", Decimal("0.1"), "v2-t-e0")
    old = bybit.adapter.fetch_order("BTCUSDT", "v1-t-e0")
    assert old is not None and old.is_filled and old.client_id == "v1-t-e0"


def test_position_level_stop_loss_counts_as_a_whole_position_stop(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"position_delay_ms": 0})
    open_long(bybit.adapter)
    bybit.adapter.client.privatePostV5PositionTradingStop(
        {"category": "linear", "symbol": "BTCUSDT", "positionIdx": 0, "stopLoss": "58000"}
    )
    [order] = bybit.adapter.open_orders()
    assert order.close_position and order.amount == 0 and order.client_id is None
    [position] = bybit.adapter.positions()
    [stop] = stops_for(position.to_domain(), [order.to_domain()])
    assert stop.trigger_price == Decimal(58000)


def test_close_position_stop_without_quantity_takes_the_position_size(bybit: Venue) -> None:
    open_long(bybit.adapter, qty="0.02")
    stop = bybit.adapter.create_stop(
        "BTCUSDT", "sell", Decimal(0), Decimal("58800"), "v1-t-s0", close_position=True
    )
    assert stop.amount == Decimal("0.02") and stop.close_on_trigger


def test_rate_limit_answer_is_retryable(bybit: Venue) -> None:
    bybit.sim.fault("order/create", "rate_limit", count=1)
    with pytest.raises(errors.RateLimited):
        open_long(bybit.adapter)
    assert bybit.sim.state()["positions"] == []


def test_trades_since_longer_ago_than_a_bybit_window(bybit: Venue) -> None:
    open_long(bybit.adapter)
    before = bybit.adapter.calls
    since = datetime.now(UTC) - timedelta(days=10)
    [trade] = bybit.adapter.trades("BTCUSDT", since=since)
    assert trade.side == "buy"
    assert bybit.adapter.calls - before == 2  # two 7-day windows


def test_retcode_as_string_is_classified_the_same(bybit: Venue) -> None:
    bybit.sim.admin("POST", "/_sim/config", {"retcode_as_string": True})
    with pytest.raises(errors.InsufficientFunds):
        bybit.adapter.create_market_order("BTCUSDT", "buy", Decimal("5"), "v1-t-e0")
