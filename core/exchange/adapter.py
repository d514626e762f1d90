"""The engine's one door to an exchange: typed calls over ccxt, errors by kind, Decimal money.

Design points:
- Symbols are exchange-native ids (``BTCUSDT``) everywhere in the engine; ccxt's unified
  symbols (``BTC/USDT:USDT``) stay inside this package.
- Every number from the exchange becomes ``Decimal(str(x))`` here.
- Batch reads (all positions, all open orders, regular and conditional) so a guardian cycle
  costs a number of calls that does not grow with the number of positions (Binance: two
  calls for open orders; Bybit: one per 50 open orders, its page size).
- How each operation is spoken to a venue lives in its dialect: ``binance.py`` (stops in
  the algo-order service) and ``bybit.py`` (one order book, ``positionIdx``, pagination,
  positions that show up after their fill). The dialect is chosen by the ccxt client.
- Leverage and margin mode are set once per symbol per process (cached; losing the cache only
  costs a repeat of an idempotent call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import ccxt

from core import metrics
from core.domain.sizing import MarketRules
from core.exchange.binance import BinanceDialect
from core.exchange.bybit import BybitDialect
from core.exchange.dialect import Dialect, DialectOptions
from core.exchange.errors import SymbolUnavailable, classify
from core.exchange.parsing import dec, dec0
from core.exchange.types import OrderSnapshot, PositionSnapshot, StopRequest, TradeSnapshot
from core.locks import ensure_locks_held

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["ExchangeAdapter", "dec", "dialect_for"]


def dialect_for(client: Any) -> type[Dialect]:
    """The dialect a ccxt client speaks (its ``id``: ``binanceusdm`` / ``bybit``)."""
    return BybitDialect if getattr(client, "id", "") == "bybit" else BinanceDialect


class ExchangeAdapter:
    """One exchange account, synchronous (Celery workers are synchronous)."""

    def __init__(
        self,
        client: ccxt.Exchange,
        name: str = "binance",
        *,
        options: DialectOptions | None = None,
    ) -> None:
        self.client = client
        self.name = name  # how the engine calls this exchange in the database
        self._setup_done: set[str] = set()
        self.calls = 0
        self.dialect: Dialect = dialect_for(client)(self, options)

    # --- plumbing --------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, mutating: bool = False, **kw: Any) -> T:
        """One request to the venue: counted, and any ccxt error classified by kind."""
        self.calls += 1
        try:
            return fn(*args, **kw)
        except ccxt.BaseError as exc:
            failure = classify(exc, mutating=mutating)
            metrics.count_exchange_error(type(failure).__name__)
            raise failure from exc

    _call = call  # the name the adapter's first callers used

    def load_markets(self, reload: bool = False) -> None:
        if self.client.markets and not reload:
            return  # cached: no request, not counted
        self.call(self.client.load_markets, reload)

    def unified(self, symbol: str) -> str:
        """``BTCUSDT`` -> ``BTC/USDT:USDT`` (the linear perpetual)."""
        self.load_markets()
        for market in self.client.markets_by_id.get(symbol, []) or []:
            if market.get("linear") and market.get("swap"):
                return str(market["symbol"])
        if symbol in self.client.markets:
            return symbol
        raise SymbolUnavailable(f"unknown symbol {symbol}")

    def native(self, unified_symbol: str) -> str:
        self.load_markets()
        market = self.client.markets.get(unified_symbol)
        return str(market["id"]) if market else unified_symbol.replace("/", "").split(":")[0]

    # --- markets and account -----------------------------------------------------------------

    def rules(self, symbol: str) -> MarketRules:
        """Precision and limits; a market that is not trading is SymbolUnavailable."""
        market = self.client.market(self.unified(symbol))
        if not market.get("active", True):
            raise SymbolUnavailable(f"{symbol} is not trading")
        limits, precision = market.get("limits", {}), market.get("precision", {})
        filters = self.dialect.market_filters(market)
        return MarketRules(
            tick_size=filters.tick_size or dec0(precision.get("price")),
            step_size=filters.step_size or dec0(precision.get("amount")),
            min_qty=dec0(limits.get("amount", {}).get("min")),
            # entries and closes are market orders: the market-order maximum bounds them too
            max_qty=min(
                (
                    q
                    for q in (
                        dec(limits.get("amount", {}).get("max")),
                        dec(limits.get("market", {}).get("max")),
                        filters.market_max_qty,
                    )
                    if q
                ),
                default=None,
            ),
            min_notional=dec0(limits.get("cost", {}).get("min")),
        )

    def ensure_trading_setup(self, symbol: str, leverage: int, margin_mode: str) -> None:
        """Set leverage and margin mode once per symbol; 'no change needed' is success."""
        if symbol in self._setup_done:
            return
        ensure_locks_held()
        self.dialect.setup(symbol, leverage, margin_mode)
        self._setup_done.add(symbol)

    def free_balance(self, asset: str = "USDT") -> Decimal:
        balance = self.call(self.client.fetch_balance)
        return dec0(balance.get(asset, {}).get("free"))

    def mark_price(self, symbol: str) -> Decimal:
        price = self.dialect.mark_price(symbol)
        if price is None:
            raise SymbolUnavailable(f"no mark price for {symbol}")
        return price

    def mark_prices(self) -> dict[str, Decimal]:
        return self.dialect.mark_prices()

    # --- orders ------------------------------------------------------------------------------

    def create_market_order(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        client_id: str,
        *,
        reduce_only: bool = False,
    ) -> OrderSnapshot:
        ensure_locks_held()  # a holder that lost its symbol lock mutates nothing
        return self.dialect.create_market_order(symbol, side, quantity, client_id, reduce_only)

    def create_stop(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        trigger_price: Decimal,
        client_id: str,
        *,
        close_position: bool = False,
    ) -> OrderSnapshot:
        """A reduce-only stop-market order triggered by the mark price."""
        ensure_locks_held()
        stop = StopRequest(symbol, side, quantity, trigger_price, client_id, close_position)
        return self.dialect.create_stop(stop)

    def fetch_order(
        self, symbol: str, client_id: str, *, conditional: bool = False
    ) -> OrderSnapshot | None:
        """Look an order up by our client id; None if the exchange has never heard of it."""
        return self.dialect.fetch_order(symbol, client_id=client_id, conditional=conditional)

    def fetch_order_by_id(
        self, symbol: str, order_id: str, *, conditional: bool = False
    ) -> OrderSnapshot | None:
        return self.dialect.fetch_order(symbol, order_id=order_id, conditional=conditional)

    def cancel_order(self, symbol: str, order_id: str, *, conditional: bool = False) -> bool:
        """Cancel; True if cancelled now, False if it was already gone (not an error here)."""
        ensure_locks_held()
        return self.dialect.cancel_order(symbol, order_id, conditional)

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        """Every open order on the account, regular and conditional, whatever the count.

        With ``symbol``: that symbol's only (cheaper on both venues: Binance weighs an
        all-symbol read 40 against 1, Bybit pages through the whole account otherwise).
        """
        return self.dialect.open_orders(symbol)

    def positions(self) -> list[PositionSnapshot]:
        """Every open position on the account (Binance: one call; Bybit: one per 200)."""
        return self.dialect.positions()

    def trades(self, symbol: str, since: datetime | None = None) -> list[TradeSnapshot]:
        return self.dialect.trades(symbol, since)
