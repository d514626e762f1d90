"""The exchange clients' lean HTTP session against the paper exchange, on both dialects: a
stop move's POST and DELETE go through it (not through requests), and an answer the venue
loses turns into an unknown outcome with the stop sent exactly once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.exchange import errors
from core.exchange.adapter import ExchangeAdapter
from core.exchange.dialect import DialectOptions
from core.exchange.http import LeanSession

pytestmark = pytest.mark.integration
FAST = DialectOptions(visibility_timeout=1.0)


@pytest.fixture(params=["binance", "bybit"])
def venue(request: pytest.FixtureRequest) -> tuple[str, Any, Any]:
    if request.param == "binance":
        return (
            "binance",
            request.getfixturevalue("sim"),
            request.getfixturevalue("paper_exchange_factory"),
        )
    return (
        "bybit",
        request.getfixturevalue("bybit_sim"),
        request.getfixturevalue("bybit_exchange_factory"),
    )


def _adapter(factory: Any, dialect: str, **client_kw: Any) -> ExchangeAdapter:
    return ExchangeAdapter(factory(**client_kw), dialect, options=FAST)


def _stop_posts(sim: Any, since: int) -> list[dict[str, Any]]:
    return [
        r
        for r in sim.requests(since)["requests"]
        if r["method"] == "POST" and r["path"].rsplit("/", 1)[-1] in ("algoOrder", "create")
    ]


def _open_long(adapter: ExchangeAdapter) -> Decimal:
    adapter.create_market_order("BTCUSDT", "buy", Decimal("0.01"), "v1-h-e0")
    return adapter.mark_price("BTCUSDT")


def test_a_stop_move_goes_through_the_lean_session(venue):
    dialect, _, factory = venue
    adapter = _adapter(factory, dialect)
    session = adapter.client.session
    assert isinstance(session, LeanSession)
    mark = _open_long(adapter)
    old = adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * Decimal("0.97"), "v1-h-s0")
    new = adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * Decimal("0.98"), "v1-h-s1")
    assert adapter.cancel_order("BTCUSDT", old.id, conditional=True) is True
    assert [o.client_id for o in adapter.open_orders()] == [new.client_id]
    assert session._fallback is None  # every call took the lean path
    with pytest.raises(errors.WouldTriggerImmediately):
        adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * 2, "v1-h-s2")


@pytest.mark.parametrize("mode", ["drop", "hold"])
def test_a_lost_answer_to_a_stop_is_unknown_and_the_stop_went_out_once(venue, mode):
    dialect, sim, factory = venue
    adapter = _adapter(factory, dialect, timeout_ms=500)
    mark = _open_long(adapter)
    endpoint = "order/create" if dialect == "bybit" else "algoOrder"
    sim.fault(endpoint, "timeout_after_accept", method="POST", count=1, mode=mode, hold_ms=1500)
    since = sim.requests()["next"]
    with pytest.raises(errors.OutcomeUnknown):
        adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), mark * Decimal("0.97"), "v1-h-s0")
    assert len(_stop_posts(sim, since)) == 1
    found = adapter.fetch_order("BTCUSDT", "v1-h-s0", conditional=True)
    assert found is not None and found.is_open
