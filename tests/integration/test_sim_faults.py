# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""Fault injection through real ccxt: every kind, and what the exchange state is after."""

from __future__ import annotations

import time
from typing import Any

import ccxt
import pytest

from tests.fixtures.sim import (  # noqa: F401 - fixtures
    _paper_session_exchange,
    paper_exchange,
    paper_exchange_factory,
    sim,
    sim_server,
)

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def contracts(ex: Any) -> float:
    found = ex.fetch_positions([BTC])
    return found[0]["contracts"] if found else 0.0


@pytest.mark.parametrize(
    ("kind", "extra", "exc"),
    [
        ("http_error", {"status": 503}, ccxt.ExchangeNotAvailable),
        ("http_error", {"status": 502}, ccxt.ExchangeNotAvailable),
        ("http_error", {"status": 503, "body": "json"}, ccxt.OperationFailed),
        ("rate_limit", {}, ccxt.DDoSProtection),
        ("ban", {}, ccxt.DDoSProtection),
    ],
)
def test_rejecting_faults_do_not_execute(
    sim: Any, paper_exchange: Any, kind: str, extra: dict[str, Any], exc: type
) -> None:
    sim.fault("order", kind, count=1, method="POST", **extra)
    with pytest.raises(exc):
        paper_exchange.create_order(BTC, "market", "buy", 0.01)
    assert contracts(paper_exchange) == 0
    paper_exchange.create_order(BTC, "market", "buy", 0.01)  # count=1: the next one passes
    assert contracts(paper_exchange) == 0.01


def test_rate_limit_answers_code_1003(sim: Any, paper_exchange: Any) -> None:
    sim.fault("*", "rate_limit", count=1)
    with pytest.raises(ccxt.DDoSProtection) as info:
        paper_exchange.fetch_balance()
    assert "-1003" in str(info.value)


def test_latency_is_applied_and_logged(sim: Any, paper_exchange: Any) -> None:
    start = sim.requests()["next"]
    sim.fault("/fapi/v1/premiumIndex", "latency", latency_ms=50, count=1)
    paper_exchange.fetch_mark_price(BTC)
    entries = sim.requests(start)["requests"]
    assert entries[-1]["fault"] == "latency"


def test_timeout_after_accept_hold(sim: Any, paper_exchange_factory: Any) -> None:
    ex = paper_exchange_factory(timeout_ms=300)
    sim.fault("order", "timeout_after_accept", method="POST", count=1, hold_ms=3000)
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "lost-1"})
    found = ex.fetch_order(None, BTC, params={"clientOrderId": "lost-1"})
    assert found["status"] == "closed" and found["filled"] == 0.01
    assert contracts(ex) == 0.01


def test_timeout_after_accept_drop(sim: Any, paper_exchange: Any) -> None:
    sim.fault("algoOrder", "timeout", method="POST", count=1, mode="drop")
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.NetworkError):
        paper_exchange.create_order(
            BTC,
            "market",
            "sell",
            0.01,
            params={"stopPrice": 59000, "reduceOnly": True, "clientOrderId": "sl-lost"},
        )
    stop = paper_exchange.fetch_order(
        None, BTC, params={"clientOrderId": "sl-lost", "trigger": True}
    )
    assert stop["status"] == "open"


def test_delayed_fill(sim: Any, paper_exchange: Any) -> None:
    sim.fault("order", "delayed_fill", method="POST", count=1, delay_ms=200)
    order = paper_exchange.create_order(BTC, "market", "buy", 0.01)
    assert order["status"] == "open" and order["filled"] == 0
    wait_until(lambda: paper_exchange.fetch_order(order["id"], BTC)["status"] == "closed")
    assert contracts(paper_exchange) == 0.01


def test_partial_fill(sim: Any, paper_exchange: Any) -> None:
    sim.fault("order", "partial_fill", method="POST", count=1, fraction=0.4)
    order = paper_exchange.create_order(BTC, "market", "buy", 0.01)
    assert order["filled"] == 0.004
    assert order["status"] == "expired"  # the unfilled rest of a market order expires
    assert contracts(paper_exchange) == 0.004


def test_probability_faults_are_seeded(sim: Any, paper_exchange: Any) -> None:
    def pattern() -> list[bool]:
        sim.reset()
        sim.fault("time", "http_error", probability=0.5)
        outcome = []
        for _ in range(16):
            try:
                paper_exchange.fetch_time()
                outcome.append(True)
            except ccxt.ExchangeNotAvailable:
                outcome.append(False)
        return outcome

    first = pattern()
    assert first == pattern()
    assert True in first and False in first


def test_clear_faults(sim: Any, paper_exchange: Any) -> None:
    sim.fault("*", "http_error")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        paper_exchange.fetch_time()
    sim.admin("DELETE", "/_sim/fault")
    assert paper_exchange.fetch_time() > 0
