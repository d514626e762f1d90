"""What differs between venues, behind one interface the adapter delegates to.

The adapter (``adapter.py``) owns the public API, the symbol mapping, call counting and
error classification; a dialect owns how each operation is spoken to one venue through
ccxt: which params, which endpoint, how the answer is read. ``binance.py`` speaks Binance
USD-M (stops in the algo-order service), ``bybit.py`` speaks Bybit v5 linear (one order
book, ``positionIdx``, paginated lists, a position that shows up after its fill).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from core.exchange.errors import ExchangeFailure
from core.exchange.parsing import dec, dec0, ts
from core.exchange.types import OrderSnapshot, PositionSnapshot, StopRequest, TradeSnapshot

T = TypeVar("T")


class Venue(Protocol):
    """The adapter's plumbing a dialect uses."""

    client: Any

    def call(self, fn: Callable[..., T], *args: Any, mutating: bool = False, **kw: Any) -> T: ...

    def unified(self, symbol: str) -> str: ...

    def native(self, unified_symbol: str) -> str: ...


@dataclass(frozen=True)
class MarketFilters:
    """Venue-specific precision and bounds; None: use ccxt's unified market fields."""

    tick_size: Decimal | None = None
    step_size: Decimal | None = None
    market_max_qty: Decimal | None = None


@dataclass(frozen=True)
class DialectOptions:
    #: How long to wait for a position the engine just opened to show up on the venue
    #: (Bybit's position list lags its fills), polling with growing intervals.
    visibility_timeout: float = 3.0
    poll_first: float = 0.05
    poll_ceiling: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep)


class Dialect(ABC):
    """One venue's way of doing each adapter operation."""

    def __init__(self, venue: Venue, options: DialectOptions | None = None) -> None:
        self.venue = venue
        self.client = venue.client
        self.options = options or DialectOptions()

    @abstractmethod
    def market_filters(self, market: dict[str, Any]) -> MarketFilters: ...

    @abstractmethod
    def setup(self, symbol: str, leverage: int, margin_mode: str) -> None: ...

    def set_unless_already(self, unchanged: int, fn: Callable[..., Any], *args: Any) -> None:
        """A mutating setting call; the venue's refusal ``unchanged`` means it is already
        so, which is what was wanted."""
        try:
            self.venue.call(fn, *args, mutating=True)
        except ExchangeFailure as exc:
            if exc.code != unchanged:
                raise

    # The venue's ticker call for one symbol and for all: their answers carry the mark price.
    @abstractmethod
    def fetch_mark(self, unified: str) -> dict[str, Any]: ...

    @abstractmethod
    def fetch_marks(self) -> dict[str, dict[str, Any]]: ...

    def mark_price(self, symbol: str) -> Decimal | None:
        return _mark_of(self.venue.call(self.fetch_mark, self.venue.unified(symbol)))

    def mark_prices(self) -> dict[str, Decimal]:
        prices: dict[str, Decimal] = {}
        for unified, ticker in self.venue.call(self.fetch_marks).items():
            price = _mark_of(ticker)
            if price is not None:
                prices[self.venue.native(unified)] = price
        return prices

    @abstractmethod
    def create_market_order(
        self, symbol: str, side: str, quantity: Decimal, client_id: str, reduce_only: bool
    ) -> OrderSnapshot: ...

    @abstractmethod
    def create_stop(self, stop: StopRequest) -> OrderSnapshot: ...

    @abstractmethod
    def fetch_order(
        self,
        symbol: str,
        *,
        client_id: str | None = None,
        order_id: str | None = None,
        conditional: bool = False,
    ) -> OrderSnapshot | None:
        """By client id or by order id; None if the venue has never heard of it."""

    @abstractmethod
    def cancel_order(self, symbol: str, order_id: str, conditional: bool) -> bool: ...

    @abstractmethod
    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        """Every open order, regular and conditional; of one symbol if given."""

    @abstractmethod
    def positions(self) -> list[PositionSnapshot]: ...

    @abstractmethod
    def trades(self, symbol: str, since: datetime | None) -> list[TradeSnapshot]: ...

    # -- shared parsing ---------------------------------------------------------------

    def position_snapshot(self, p: dict[str, Any]) -> PositionSnapshot | None:
        """A ccxt position as the engine's snapshot; None when flat."""
        quantity = abs(dec0(p.get("contracts")))
        if quantity == 0:
            return None
        info = p.get("info", {}) or {}
        side = p.get("side") or ("long" if dec0(info.get("positionAmt")) > 0 else "short")
        return PositionSnapshot(
            symbol=self.venue.native(p["symbol"]),
            side=side,
            quantity=quantity,
            entry_price=dec0(p.get("entryPrice")),
            mark_price=dec(p.get("markPrice")),
            unrealized_pnl=dec(p.get("unrealizedPnl")),
            leverage=int(p["leverage"]) if p.get("leverage") else None,
            position_idx=int(info.get("positionIdx", 0) or 0),
        )

    @staticmethod
    def trade_snapshot(t: dict[str, Any], symbol: str, pnl_key: str) -> TradeSnapshot:
        info = t.get("info", {}) or {}
        return TradeSnapshot(
            id=str(t.get("id")),
            order_id=str(t["order"]) if t.get("order") else None,
            symbol=symbol,
            side=str(t.get("side")),
            price=dec0(t.get("price")),
            quantity=dec0(t.get("amount")),
            fee=dec0((t.get("fee") or {}).get("cost")),
            realized_pnl=dec(info.get(pnl_key)),
            timestamp=ts(t.get("timestamp")) or datetime.now(UTC),
        )


def _mark_of(ticker: dict[str, Any]) -> Decimal | None:
    return dec(ticker.get("markPrice")) or dec(ticker.get("info", {}).get("markPrice"))
