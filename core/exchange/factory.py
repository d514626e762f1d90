"""Build ccxt exchange clients for the engine: the paper exchange or a real venue.

`paper` is ccxt's own `binanceusdm` (or, with `paper_dialect="bybit"`, ccxt's own `bybit`),
unmodified, with its URLs pointed at the simulator. Three settings make binanceusdm behave
against the simulator exactly as against Binance:

* `fetchCurrencies=False` and linear-only markets, so only `/fapi/...` is ever called;
* the linear (fapi) error-code table is merged into the generic one: ccxt picks that
  table by matching the request URL against `https://fapi.binance.com`, which a local
  URL never matches, so without this `-2019 Margin is insufficient` would surface as a
  bare ExchangeError instead of InsufficientFunds;
* `warnOnFetchOpenOrdersWithoutSymbol=False`, because reconciliation fetches all open
  orders in one call on purpose (constant API calls per cycle).

For Bybit (real or paper) ccxt is told to load linear markets only and to skip the
currency list (`/v5/asset/coin/query-info` needs wallet permissions a trading key need not
have, and the engine uses no currency data); paper Bybit points every REST entry at the
simulator's `/v5/...` and the streams at `/v5/public/linear` and `/v5/private`.

API keys are passed to ccxt and never logged or included in `repr`.

The synchronous client sends through `core.exchange.http.LeanSession` instead of the
`requests.Session` ccxt builds: the same requests on the wire and the same exceptions for
ccxt to map, for a fraction of the client CPU per call (the stop move's POST and DELETE).
"""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from core.exchange.http import install as install_lean_session

PAPER = "paper"
BINANCE_USDM = "binanceusdm"
BYBIT = "bybit"
KINDS = (PAPER, BINANCE_USDM, BYBIT)
PAPER_DIALECTS = ("binance", "bybit")
BYBIT_REST_ENTRIES = ("spot", "futures", "v2", "public", "private")
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


def bybit_paper_urls(url: str) -> dict[str, Any]:
    """The `urls['api']` entries that point ccxt bybit (and ccxt.pro bybit) at the simulator."""
    base = url.rstrip("/")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    api: dict[str, Any] = {name: base for name in BYBIT_REST_ENTRIES}
    private = ws_base + "/v5/private"
    api["ws"] = {
        "public": {t: f"{ws_base}/v5/public/{t}" for t in ("spot", "linear", "inverse", "option")},
        "private": {
            "spot": {"unified": private, "nonUnified": private},
            "contract": private,
            "usdc": private,
            "trade": ws_base + "/v5/trade",
        },
    }
    return api


def _is_bybit(kind: str, paper_dialect: str) -> bool:
    return kind == BYBIT or (kind == PAPER and paper_dialect == "bybit")


def _options(kind: str, paper_dialect: str = "binance") -> dict[str, Any]:
    options: dict[str, Any] = {
        "fetchCurrencies": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    if _is_bybit(kind, paper_dialect):
        options.update(defaultType="swap", defaultSubType="linear", defaultSettle="USDT")
        options["fetchMarkets"] = {"types": ["linear"]}
    else:
        options.update(defaultType="future", defaultSubType="linear")
        options["fetchMarkets"] = {"types": ["linear"]}
    return options


def _config(
    kind: str, api_key: str, api_secret: str, timeout_ms: int, paper_dialect: str = "binance"
) -> dict[str, Any]:
    return {
        "apiKey": api_key,
        "secret": api_secret,
        "enableRateLimit": kind != PAPER,
        "timeout": timeout_ms,
        "options": _options(kind, paper_dialect),
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


def _point_bybit_at_paper(exchange: Any, url: str | None) -> None:
    if not url:
        raise ValueError("the paper exchange needs its base URL (VIGIL_EXCHANGE_URL)")
    api = dict(exchange.urls["api"])
    paper = bybit_paper_urls(url)
    if "ws" not in api:
        paper.pop("ws")  # REST-only client (ccxt, ccxt.async_support)
    api.update(paper)
    exchange.urls["api"] = api


def _class_for(kind: str, module: Any, paper_dialect: str = "binance") -> Any:
    if kind not in KINDS:
        raise ValueError(f"unknown exchange kind {kind!r}; expected one of {KINDS}")
    if paper_dialect not in PAPER_DIALECTS:
        raise ValueError(f"unknown paper dialect {paper_dialect!r}; one of {PAPER_DIALECTS}")
    return module.bybit if _is_bybit(kind, paper_dialect) else module.binanceusdm


def _build(
    module: Any,
    kind: str,
    url: str | None,
    api_key: str,
    api_secret: str,
    testnet: bool,
    timeout_ms: int,
    paper_dialect: str = "binance",
) -> Any:
    config = _config(kind, api_key, api_secret, timeout_ms, paper_dialect)
    exchange = _class_for(kind, module, paper_dialect)(config)
    if _is_bybit(kind, paper_dialect):
        # the engine needs no currency table; Bybit's needs wallet permissions
        exchange.has = {**exchange.has, "fetchCurrencies": False}
    if kind == PAPER and paper_dialect == "bybit":
        _point_bybit_at_paper(exchange, url)
    elif kind == PAPER:
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
    paper_dialect: str = "binance",
) -> ccxt.Exchange:
    """A REST client for `kind` (`paper`, `binanceusdm` or `bybit`); async if asked.

    `paper_dialect` says which venue the paper exchange at `url` speaks (`binance`/`bybit`).
    """
    module = ccxt_async if async_mode else ccxt
    exchange: ccxt.Exchange = _build(
        module, kind, url, api_key, api_secret, testnet, timeout_ms, paper_dialect
    )
    if not async_mode:
        install_lean_session(exchange)  # core/exchange/http.py: requests' wire, less CPU
    return exchange


def build_pro_exchange(
    kind: str,
    *,
    url: str | None = None,
    api_key: str = "",
    api_secret: str = "",
    testnet: bool = False,
    timeout_ms: int = 10000,
    paper_dialect: str = "binance",
) -> ccxt_pro.Exchange:
    """A ccxt.pro (WebSocket + async REST) client, pointed at the simulator for `paper`."""
    exchange: ccxt_pro.Exchange = _build(
        ccxt_pro, kind, url, api_key, api_secret, testnet, timeout_ms, paper_dialect
    )
    return exchange
