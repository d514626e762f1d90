"""Public market data in Bybit v5 shapes: instruments (with their filters) and tickers.

The filters come from the same market table as the Binance dialect (`sim.markets`), so a
symbol has the same tick, step, minimums and maximums on both venues of the simulator;
`maxMktOrderQty` is the market-order bound (Binance's MARKET_LOT_SIZE) and
`minNotionalValue` the minimum order value. Instruments that are not trading are listed
only when asked for by status (Bybit lists `Trading` ones by default).
"""

from __future__ import annotations

import time
from decimal import Decimal

from sim.markets import ONBOARD_MS, Market
from sim.orders import fmt

FUNDING_INTERVAL_MS = 8 * 3600 * 1000


def instrument_status(market: Market) -> str:
    return "Trading" if market.trading else "Delivering"


def instrument_row(market: Market) -> dict[str, object]:
    """An element of `/v5/market/instruments-info` (category linear)."""
    return {
        "symbol": market.symbol,
        "contractType": "LinearPerpetual",
        "status": instrument_status(market),
        "baseCoin": market.base,
        "quoteCoin": "USDT",
        "settleCoin": "USDT",
        "launchTime": str(ONBOARD_MS),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(market.price_precision),
        "leverageFilter": {
            "minLeverage": "1",
            "maxLeverage": f"{market.max_leverage}.00",
            "leverageStep": "0.01",
        },
        "priceFilter": {
            "minPrice": fmt(market.tick_size),
            "maxPrice": fmt(market.price * 1000),
            "tickSize": fmt(market.tick_size),
        },
        "lotSizeFilter": {
            "maxOrderQty": fmt(market.max_qty),
            "maxMktOrderQty": fmt(market.market_max_qty),
            "minOrderQty": fmt(market.min_qty),
            "qtyStep": fmt(market.step_size),
            "postOnlyMaxOrderQty": fmt(market.max_qty),
            "minNotionalValue": fmt(market.min_notional),
        },
        "unifiedMarginTrade": True,
        "fundingInterval": FUNDING_INTERVAL_MS // 60000,
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "isPreListing": False,
        "preListingInfo": None,
    }


def ticker_row(market: Market, price: Decimal) -> dict[str, object]:
    """An element of `/v5/market/tickers` (linear) and the `tickers.<SYMBOL>` snapshot."""
    now = int(time.time() * 1000)
    text = fmt(price)
    change = (price - market.price) / market.price
    return {
        "symbol": market.symbol,
        "lastPrice": text,
        "indexPrice": text,
        "markPrice": text,
        "prevPrice24h": fmt(market.price),
        "price24hPcnt": fmt(change.quantize(Decimal("0.000001"))),
        "highPrice24h": fmt(max(price, market.price)),
        "lowPrice24h": fmt(min(price, market.price)),
        "prevPrice1h": fmt(market.price),
        "openInterest": "0",
        "openInterestValue": "0",
        "turnover24h": "0",
        "volume24h": "0",
        "fundingRate": "0.0001",
        "nextFundingTime": str((now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": "1000",
        "bid1Price": fmt(price - market.tick_size),
        "ask1Price": fmt(price + market.tick_size),
        "bid1Size": "1000",
        "basis": "",
    }


def ticker_delta(symbol: str, price: Decimal) -> dict[str, object]:
    """What a `tickers.<SYMBOL>` delta carries when the mark moves."""
    text = fmt(price)
    return {"symbol": symbol, "markPrice": text, "indexPrice": text, "lastPrice": text}
