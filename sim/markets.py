"""Symbol table of the paper exchange: the USDT perpetuals it lists and their filters.

The filters are what make the simulator useful as a test ground: an engine that rounds
quantities wrongly or sizes an entry below the minimum notional must be refused here the
same way Binance refuses it, so the values mirror Binance USD-M's published filters
(tick sizes, step sizes, minimum quantities and notionals) for the well-known symbols.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

QUOTE = "USDT"
#: Binance's far-future delivery date for perpetual contracts.
PERPETUAL_DELIVERY_MS = 4133404800000
ONBOARD_MS = 1569398400000
TRADABLE_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]


@dataclass(frozen=True)
class Market:
    """One listed contract with the filter values that order validation enforces."""

    symbol: str
    base: str
    price: Decimal  # initial mark price
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    status: str = "TRADING"
    max_leverage: int = 50

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    @property
    def price_precision(self) -> int:
        return _decimals(self.tick_size)

    @property
    def quantity_precision(self) -> int:
        return _decimals(self.step_size)

    def exchange_info(self) -> dict[str, Any]:
        """The symbol entry of `GET /fapi/v1/exchangeInfo`, in Binance's shape."""
        return {
            "symbol": self.symbol,
            "pair": self.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": PERPETUAL_DELIVERY_MS,
            "onboardDate": ONBOARD_MS,
            "status": self.status,
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": self.base,
            "quoteAsset": QUOTE,
            "marginAsset": QUOTE,
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": self._filters(),
            "orderTypes": TRADABLE_ORDER_TYPES,
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY"],
        }

    def _filters(self) -> list[dict[str, Any]]:
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": str(self.tick_size),
                "maxPrice": str(self.price * 1000),
                "tickSize": str(self.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": str(self.min_qty),
                "maxQty": str(self.max_qty),
                "stepSize": str(self.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": str(self.min_qty),
                "maxQty": str(self.market_max_qty),
                "stepSize": str(self.step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": str(self.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ]


def _decimals(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def _m(
    base: str,
    price: str,
    tick: str,
    step: str,
    min_qty: str,
    max_qty: str,
    market_max: str,
    notional: str = "5",
    status: str = "TRADING",
) -> Market:
    return Market(
        symbol=f"{base}{QUOTE}",
        base=base,
        price=Decimal(price),
        tick_size=Decimal(tick),
        step_size=Decimal(step),
        min_qty=Decimal(min_qty),
        max_qty=Decimal(max_qty),
        market_max_qty=Decimal(market_max),
        min_notional=Decimal(notional),
        status=status,
    )


#: Filters as Binance USD-M publishes them (rounded to recent values); prices are seeds.
DEFAULT_MARKETS: tuple[Market, ...] = (
    _m("BTC", "60000", "0.10", "0.001", "0.001", "1000", "120", "100"),
    _m("ETH", "3000", "0.01", "0.001", "0.001", "10000", "2000", "20"),
    _m("BNB", "600", "0.010", "0.01", "0.01", "100000", "2000"),
    _m("SOL", "150", "0.0100", "1", "1", "1000000", "5000"),
    _m("XRP", "0.6000", "0.0001", "0.1", "0.1", "10000000", "2000000"),
    _m("DOGE", "0.150000", "0.000010", "1", "1", "50000000", "30000000"),
    _m("ADA", "0.45000", "0.00010", "1", "1", "10000000", "2000000"),
    _m("AVAX", "30.0000", "0.0010", "1", "1", "1000000", "50000"),
    _m("LINK", "15.000", "0.001", "0.01", "0.01", "1000000", "20000"),
    _m("DOT", "7.000", "0.001", "0.1", "0.1", "1000000", "100000"),
    _m("LTC", "80.00", "0.01", "0.001", "0.001", "100000", "5000"),
    _m("BCH", "400.00", "0.01", "0.001", "0.001", "10000", "850"),
    _m("TRX", "0.12000", "0.00001", "1", "1", "10000000", "5000000"),
    _m("ATOM", "8.000", "0.001", "0.01", "0.01", "1000000", "50000"),
    _m("NEAR", "5.0000", "0.0010", "1", "1", "1000000", "100000"),
    _m("APT", "9.00000", "0.00010", "0.1", "0.1", "1000000", "100000"),
    _m("ARB", "1.00000", "0.00010", "0.1", "0.1", "10000000", "1000000"),
    _m("OP", "2.000000", "0.000100", "0.1", "0.1", "1000000", "200000"),
    _m("FIL", "5.000", "0.001", "0.1", "0.1", "1000000", "100000"),
    _m("ETC", "25.000", "0.001", "0.01", "0.01", "1000000", "20000"),
    _m("UNI", "8.0000", "0.0010", "1", "1", "1000000", "50000"),
    _m("SUI", "1.000000", "0.000100", "0.1", "0.1", "10000000", "500000"),
    _m("INJ", "25.00000", "0.00100", "0.1", "0.1", "1000000", "20000"),
    _m("1000PEPE", "0.0100000", "0.0000001", "1", "1", "800000000", "80000000"),
    # Listed but not tradable: opening a position answers -4140, like a delisting symbol.
    _m("LUNA", "0.5000", "0.0001", "1", "1", "1000000", "100000", status="SETTLING"),
)


def synthetic_markets(count: int) -> list[Market]:
    """`count` extra contracts (SIM000USDT ...) for fan-out benchmarks over many symbols."""
    return [
        _m(f"SIM{i:03d}", "10.0000", "0.0001", "0.1", "0.1", "10000000", "1000000")
        for i in range(count)
    ]


def build_markets(symbols: list[str] | None) -> dict[str, Market]:
    """The table to serve: all defaults, or the named subset (unknown names get generic
    filters so a test can list any symbol it needs)."""
    known = {m.symbol: m for m in DEFAULT_MARKETS}
    if not symbols:
        return dict(known)
    table: dict[str, Market] = {}
    for raw in symbols:
        name = raw.strip().upper()
        if not name:
            continue
        if name in known:
            table[name] = known[name]
        elif name.endswith(QUOTE) and len(name) > len(QUOTE):
            table[name] = _m(
                name[: -len(QUOTE)], "10.0000", "0.0001", "0.1", "0.1", "10000000", "1000000"
            )
    return table
