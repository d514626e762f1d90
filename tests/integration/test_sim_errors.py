# ruff: noqa: F811 - fixtures are imported explicitly until the root conftest loads them
"""Every error the engine can meet surfaces as the ccxt exception Binance's would."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.sim import (  # noqa: F401 - fixtures
    _paper_session_exchange,
    paper_exchange,
    paper_exchange_factory,
    sim,
    sim_server,
)

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"


def raw(
    sim: Any,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    *,
    key: str | None = "paper",
    secret: str = "paper",
    sign: bool = True,
    body_mode: bool = False,
) -> tuple[int, Any]:
    """A hand-made Binance request (signed like ccxt, or broken on purpose)."""
    query = urllib.parse.urlencode({**(params or {})})
    if sign:
        query = "&".join(p for p in (query, f"timestamp={int(time.time() * 1000)}") if p)
        sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        query += f"&signature={sig}"
    url = sim.url + path
    data = None
    if body_mode:
        data = query.encode()
    elif query:
        url += "?" + query
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if key is not None:
        headers["X-MBX-APIKEY"] = key
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_signature_wrong_key_missing_key(sim: Any) -> None:
    status, body = raw(sim, "GET", "/fapi/v3/account", secret="wrong")
    assert (status, body["code"]) == (400, -1022)
    status, body = raw(sim, "GET", "/fapi/v3/account", key="other")
    assert (status, body["code"]) == (401, -2015)
    status, body = raw(sim, "GET", "/fapi/v3/account", key=None)
    assert (status, body["code"]) == (401, -2014)
    status, body = raw(sim, "GET", "/fapi/v3/account", sign=False)
    assert (status, body["code"]) == (400, -1102)
    status, body = raw(sim, "GET", "/fapi/v3/account")
    assert status == 200 and body["assets"][0]["asset"] == "USDT"


def test_signed_body_is_accepted(sim: Any) -> None:
    status, body = raw(
        sim, "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "7"}, body_mode=True
    )
    assert status == 200 and body["leverage"] == 7


def test_stale_timestamp_is_refused(sim: Any) -> None:
    query = f"timestamp={int(time.time() * 1000) - 10_000}&recvWindow=5000"
    sig = hmac.new(b"paper", query.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{sim.url}/fapi/v3/account?{query}&signature={sig}", headers={"X-MBX-APIKEY": "paper"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert json.loads(info.value.read())["code"] == -1021


def test_ccxt_maps_auth_errors(paper_exchange_factory: Any) -> None:
    with pytest.raises(ccxt.AuthenticationError):
        paper_exchange_factory(api_secret="nope").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        paper_exchange_factory(api_key="nope").fetch_balance()


def test_plain_order_endpoint_refuses_conditional_types(sim: Any, paper_exchange: Any) -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "quantity": "0.01",
        "stopPrice": "50000",
    }
    status, body = raw(sim, "POST", "/fapi/v1/order", params)
    assert (status, body["code"]) == (400, -4120)
    with pytest.raises(ccxt.InvalidOrder) as info:
        paper_exchange.fapiPrivatePostOrder(params)
    assert "-4120" in str(info.value)


@pytest.mark.parametrize(
    ("symbol", "amount", "exc", "code"),
    [
        ("BTC/USDT:USDT", 0.0015, ccxt.BadRequest, -1111),  # raw qty off the step
        ("BTC/USDT:USDT", 0.0005, ccxt.BadRequest, -4004),  # below minQty
        ("BTC/USDT:USDT", 0.001, ccxt.InvalidOrder, -4164),  # 60 USDT < 100 min notional
        ("BTC/USDT:USDT", 5, ccxt.InsufficientFunds, -2019),  # 300k notional at 20x
        ("LUNA/USDT:USDT", 100, ccxt.BadRequest, -4140),  # symbol not trading
    ],
)
def test_order_errors_map_to_ccxt_classes(
    paper_exchange: Any, symbol: str, amount: float, exc: type, code: int
) -> None:
    market = paper_exchange.market(symbol)
    params = {
        "symbol": market["id"],
        "side": "BUY",
        "type": "MARKET",
        "quantity": str(amount),
        "newOrderRespType": "RESULT",
    }
    with pytest.raises(exc) as info:
        paper_exchange.fapiPrivatePostOrder(params)  # raw: no client-side rounding
    assert str(code) in str(info.value)


def test_unknown_symbol_and_unknown_orders(paper_exchange: Any) -> None:
    with pytest.raises(ccxt.BadSymbol):
        paper_exchange.fapiPublicGetPremiumIndex({"symbol": "NOPEUSDT"})
    with pytest.raises(ccxt.OrderNotFound) as query:
        paper_exchange.fetch_order("123", BTC)
    assert "-2013" in str(query.value)
    with pytest.raises(ccxt.OrderNotFound) as cancel:
        paper_exchange.cancel_order("123", BTC)
    assert "-2011" in str(cancel.value)
    with pytest.raises(ccxt.OrderNotFound):
        paper_exchange.fetch_order("123", BTC, params={"trigger": True})
    with pytest.raises(ccxt.OrderNotFound):
        paper_exchange.cancel_order("123", BTC, params={"trigger": True})


def test_algo_order_is_not_found_through_plain_endpoints(paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "market", "buy", 0.01)
    stop = paper_exchange.create_order(
        BTC, "market", "sell", 0.01, params={"stopPrice": 59000, "reduceOnly": True}
    )
    with pytest.raises(ccxt.OrderNotFound):
        paper_exchange.fetch_order(stop["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound):
        paper_exchange.cancel_order(stop["id"], BTC)


def test_duplicate_client_id_only_among_open_orders(paper_exchange: Any) -> None:
    paper_exchange.create_order(BTC, "limit", "buy", 0.002, 55000, params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder) as info:
        paper_exchange.create_order(
            BTC, "limit", "buy", 0.002, 55000, params={"clientOrderId": "dup"}
        )
    assert "-4116" in str(info.value)
    paper_exchange.create_order(BTC, "market", "buy", 0.002, params={"clientOrderId": "m1"})
    # Filled orders do not reserve their id: the second one opens more (Binance does too).
    paper_exchange.create_order(BTC, "market", "buy", 0.002, params={"clientOrderId": "m1"})
    assert paper_exchange.fetch_positions([BTC])[0]["contracts"] == 0.004
    with pytest.raises(ccxt.BadRequest):
        paper_exchange.create_order(
            BTC, "market", "buy", 0.002, params={"clientOrderId": "bad id with spaces"}
        )


def test_reduce_only_rejection_code(paper_exchange: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder) as info:
        paper_exchange.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    assert "-2022" in str(info.value)


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        (
            "POST",
            "/fapi/v1/order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "abc"},
        ),
        ("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "UP", "type": "MARKET"}),
        (
            "POST",
            "/fapi/v1/order",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "WEIRD", "quantity": "1"},
        ),
        ("POST", "/fapi/v1/order", {}),
        ("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "-5"}),
        (
            "POST",
            "/fapi/v1/algoOrder",
            {
                "symbol": "BTCUSDT",
                "algoType": "CONDITIONAL",
                "side": "SELL",
                "type": "STOP_MARKET",
                "quantity": "0.01",
                "triggerPrice": "1e5",
            },
        ),
        ("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "999"}),
        ("GET", "/fapi/v1/nothingHere", {}),
    ],
)
def test_malformed_requests_get_binance_errors_not_500(
    sim: Any, method: str, path: str, params: dict[str, str]
) -> None:
    status, body = raw(sim, method, path, params)
    assert 400 <= status < 500
    assert isinstance(body["code"], int) and body["code"] < 0 and body["msg"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "symbol",
                "side",
                "type",
                "quantity",
                "price",
                "stopPrice",
                "reduceOnly",
                "closePosition",
                "newClientOrderId",
                "timeInForce",
            ]
        ),
        st.text(max_size=12),
        max_size=8,
    )
)
def test_fuzzed_orders_never_500(sim_server: Any, params: dict[str, str]) -> None:
    status, body = raw(sim_server, "POST", "/fapi/v1/order", params)
    assert status < 500
    assert "code" in body or "orderId" in body


def test_admin_rejects_malformed_json(sim: Any) -> None:
    request = urllib.request.Request(sim.url + "/_sim/price", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert sim.state()["positions"] == []  # still serving
