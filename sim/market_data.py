"""Binance USD-M's public market data on the paper exchange: time, exchange info, mark
prices (``premiumIndex``), tickers and a synthetic order book around the mark.

Why apart from sim/rest.py: these answers read only the markets and the price book, never
the account; the routes table in sim/rest.py serves them (Bybit's: sim/bybit/market_data.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sim.orders import fmt, now_ms

if TYPE_CHECKING:
    from sim.rest_context import Ctx


def ping(ctx: Ctx) -> Any:
    return {}


def server_time(ctx: Ctx) -> Any:
    return {"serverTime": now_ms()}


def exchange_info(ctx: Ctx) -> Any:
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [m.exchange_info() for m in ctx.state.markets.values()],
    }


def symbols_or_all(ctx: Ctx) -> list[str]:
    symbol = ctx.optional_symbol()
    return [symbol] if symbol else list(ctx.state.markets)


def _next_funding(now: int) -> int:
    eight_hours = 8 * 3600 * 1000
    return (now // eight_hours + 1) * eight_hours


def _premium(ctx: Ctx, symbol: str) -> dict[str, Any]:
    mark = ctx.state.prices.prices[symbol]
    now = now_ms()
    return {
        "symbol": symbol,
        "markPrice": fmt(mark),
        "indexPrice": fmt(mark),
        "estimatedSettlePrice": fmt(mark),
        "lastFundingRate": "0.00010000",
        "interestRate": "0.00010000",
        "nextFundingTime": _next_funding(now),
        "time": now,
    }


def premium_index(ctx: Ctx) -> Any:
    rows = [_premium(ctx, s) for s in symbols_or_all(ctx)]
    return rows[0] if ctx.params.get("symbol") else rows


def _ticker(ctx: Ctx, symbol: str) -> dict[str, Any]:
    market = ctx.state.markets[symbol]
    last = ctx.state.prices.prices[symbol]
    now = now_ms()
    change = last - market.price
    return {
        "symbol": symbol,
        "priceChange": fmt(change),
        "priceChangePercent": fmt((change / market.price * 100).quantize(Decimal("0.001"))),
        "weightedAvgPrice": fmt(last),
        "lastPrice": fmt(last),
        "lastQty": fmt(market.min_qty),
        "openPrice": fmt(market.price),
        "highPrice": fmt(max(last, market.price)),
        "lowPrice": fmt(min(last, market.price)),
        "volume": "0",
        "quoteVolume": "0",
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": 0,
        "lastId": 0,
        "count": 0,
    }


def ticker_24hr(ctx: Ctx) -> Any:
    rows = [_ticker(ctx, s) for s in symbols_or_all(ctx)]
    return rows[0] if ctx.params.get("symbol") else rows


def ticker_price(ctx: Ctx) -> Any:
    now = now_ms()
    rows = [
        {"symbol": s, "price": fmt(ctx.state.prices.prices[s]), "time": now}
        for s in symbols_or_all(ctx)
    ]
    return rows[0] if ctx.params.get("symbol") else rows


def book_ticker(ctx: Ctx) -> Any:
    now = now_ms()
    rows = []
    for symbol in symbols_or_all(ctx):
        mark = ctx.state.prices.prices[symbol]
        tick = ctx.state.markets[symbol].tick_size
        rows.append(
            {
                "symbol": symbol,
                "bidPrice": fmt(mark - tick),
                "bidQty": "1000",
                "askPrice": fmt(mark + tick),
                "askQty": "1000",
                "time": now,
            }
        )
    return rows[0] if ctx.params.get("symbol") else rows


def depth(ctx: Ctx) -> Any:
    symbol = ctx.symbol()
    mark = ctx.state.prices.prices[symbol]
    tick = ctx.state.markets[symbol].tick_size
    levels = min(ctx.integer("limit") or 20, 100)
    now = now_ms()
    return {
        "lastUpdateId": now,
        "E": now,
        "T": now,
        "bids": [[fmt(mark - tick * (i + 1)), "1000"] for i in range(levels)],
        "asks": [[fmt(mark + tick * (i + 1)), "1000"] for i in range(levels)],
    }
