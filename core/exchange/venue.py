"""What the engine's services ask of an exchange account, as a protocol.

``ExchangeAdapter`` is the real one (ccxt); a unit test gives the executor a small
in-memory venue instead. Only the order executor (``core/services/executor.py``) may call
the mutating methods (``create_*``, ``cancel_order``); ``tests/unit/test_layering.py``
checks that on the source.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from core.domain.sizing import MarketRules
from core.exchange.types import OrderSnapshot, PositionSnapshot, TradeSnapshot


class Venue(Protocol):
    name: str

    def rules(self, symbol: str) -> MarketRules: ...

    def mark_price(self, symbol: str) -> Decimal: ...

    def create_market_order(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        client_id: str,
        *,
        reduce_only: bool = False,
    ) -> OrderSnapshot: ...

    def create_stop(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        trigger_price: Decimal,
        client_id: str,
        *,
        close_position: bool = False,
    ) -> OrderSnapshot: ...

    def fetch_order(
        self, symbol: str, client_id: str, *, conditional: bool = False
    ) -> OrderSnapshot | None: ...

    def cancel_order(self, symbol: str, order_id: str, *, conditional: bool = False) -> bool: ...

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]: ...

    def positions(self) -> list[PositionSnapshot]: ...

    def trades(self, symbol: str, since: datetime | None = None) -> list[TradeSnapshot]: ...
