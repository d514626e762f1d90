"""Build ccxt exchange clients for the engine: the paper exchange or a real venue.

`paper` is ccxt's own `binanceusdm`, unmodified, with its USD-M URLs pointed at the
simulator. Three settings make it behave against the simulator exactly as against
Binance:

* `fetchCurrencies=False` and linear-only markets, so only `/fapi/...` is ever called;
* the linear (fapi) error-code table is merged into the generic one: ccxt picks that
  table by matching the request URL against `https://fapi.binance.com`, which a local
  URL never matches, so without this `-2019 Margin is insufficient` would surface as a
  bare ExchangeError instead of InsufficientFunds;
* `warnOnFetchOpenOrdersWithoutSymbol=False`, because reconciliation fetches all open
  orders in one call on purpose (constant API calls per cycle).

API keys are passed to ccxt and never logged or included in `repr`.
"""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

PAPER = "paper"
BINANCE_USDM = "binanceusdm"
BYBIT = "bybit"
KINDS = (PAPER, BINANCE_USDM, BYBIT)
FAPI_ENTRIES = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
}


def paper_urls(url: str) -> dict[str, Any]:
    """The `urls['api']` entries that point ccxt binanceusdm at the simulator."""
    base = url.rstrip("/")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    api: dict[str, Any] = {name: base + path for name, path in FAPI_ENTRIES.items()}
    api["ws"] = {"future": ws_base + "/ws", "linear": ws_base + "/ws"}
    return api


def _options(kind: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "fetchCurrencies": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    if kind in (PAPER, BINANCE_USDM):
        options.update(defaultType="future", defaultSubType="linear")
        options["fetchMarkets"] = {"types": ["linear"]}
    else:
        options.update(defaultType="swap", defaultSubType="linear")
    return options


def _config(kind: str, api_key: str, api_secret: str, timeout_ms: int) -> dict[str, Any]:
    return {
        "apiKey": api_key,
        "secret": api_secret,
        "enableRateLimit": kind != PAPER,
        "timeout": timeout_ms,
        "options": _options(kind),
    }


def _point_at_paper(exchange: Any, url: str | None) -> None:
    if not url:
        raise ValueError("the paper exchange needs its base URL (VIGIL_EXCHANGE_URL)")
    api = dict(exchange.urls["api"])
    ws = dict(api.get("ws", {}))
    paper = paper_urls(url)
    ws.update(paper.pop("ws"))
    api.update(paper)
    api["ws"] = ws
    exchange.urls["api"] = api
    exceptions = exchange.exceptions
    linear = exceptions.get("linear", {})
    exceptions["exact"] = {**exceptions["exact"], **linear.get("exact", {})}
    exceptions["broad"] = {**exceptions["broad"], **linear.get("broad", {})}


def _class_for(kind: str, module: Any) -> Any:
    if kind in (PAPER, BINANCE_USDM):
        return module.binanceusdm
    if kind == BYBIT:
        return module.bybit
    raise ValueError(f"unknown exchange kind {kind!r}; expected one of {KINDS}")


def _build(
    module: Any,
    kind: str,
    url: str | None,
    api_key: str,
    api_secret: str,
    testnet: bool,
    timeout_ms: int,
) -> Any:
    exchange = _class_for(kind, module)(_config(kind, api_key, api_secret, timeout_ms))
    if kind == PAPER:
        _point_at_paper(exchange, url)
    elif testnet:
        if kind == BINANCE_USDM:
            # Binance retired the futures testnet for ccxt; its demo trading is the sandbox.
            exchange.enable_demo_trading(True)
        else:
            exchange.set_sandbox_mode(True)
    return exchange


def build_exchange(
    kind: str,
    *,
    url: str | None = None,
    api_key: str = "",
    api_secret: str = "",
    testnet: bool = False,
    async_mode: bool = False,
    timeout_ms: int = 10000,
) -> ccxt.Exchange:
    """A REST client for `kind` (`paper`, `binanceusdm` or `bybit`); async if asked."""
    module = ccxt_async if async_mode else ccxt
    exchange: ccxt.Exchange = _build(module, kind, url, api_key, api_secret, testnet, timeout_ms)
    return exchange


def build_pro_exchange(
    kind: str,
    *,
    url: str | None = None,
    api_key: str = "",
    api_secret: str = "",
    testnet: bool = False,
    timeout_ms: int = 10000,
) -> ccxt_pro.Exchange:
    """A ccxt.pro (WebSocket + async REST) client, pointed at the simulator for `paper`."""
    exchange: ccxt_pro.Exchange = _build(
        ccxt_pro, kind, url, api_key, api_secret, testnet, timeout_ms
    )
    return exchange
