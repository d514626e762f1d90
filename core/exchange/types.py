"""What the adapter returns: plain, Decimal-valued snapshots of exchange state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.domain.orders import ExchangeOrder, ExchangePosition
from core.domain.sides import OrderSide, Side


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    id: str
    client_id: str | None
    symbol: str
    side: str  # buy / sell
    type: str  # market, limit, stop_market, take_profit_market, ...
    status: str  # open, closed (filled), canceled, expired, rejected
    amount: Decimal
    filled: Decimal
    average: Decimal | None
    price: Decimal | None
    trigger_price: Decimal | None
    reduce_only: bool
    close_position: bool
    conditional: bool
    position_idx: int
    created_at: datetime | None
    #: Bybit's closeOnTrigger: reduce-only, and the venue frees margin to execute it
    close_on_trigger: bool = False

    @property
    def is_filled(self) -> bool:
        return self.status == "closed" or (self.amount > 0 and self.filled >= self.amount)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def to_domain(self) -> ExchangeOrder:
        """The open-order view the pure decisions (protection, zombies) work on."""
        return ExchangeOrder(
            id=self.id,
            client_id=self.client_id,
            symbol=self.symbol,
            side=OrderSide(self.side),
            type=self.type,
            reduce_only=self.reduce_only,
            close_position=self.close_position,
            is_conditional=self.conditional,
            trigger_price=self.trigger_price,
            quantity=self.amount - self.filled,
            position_idx=self.position_idx,
            created_at=self.created_at,
            close_on_trigger=self.close_on_trigger,
        )


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    symbol: str
    side: str  # long / short
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    unrealized_pnl: Decimal | None
    leverage: int | None
    position_idx: int

    def to_domain(self) -> ExchangePosition:
        return ExchangePosition(
            symbol=self.symbol,
            side=Side(self.side),
            quantity=self.quantity,
            entry_price=self.entry_price,
            position_idx=self.position_idx,
            mark_price=self.mark_price,
        )


@dataclass(frozen=True, slots=True)
class TradeSnapshot:
    id: str
    order_id: str | None
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    realized_pnl: Decimal | None
    timestamp: datetime


@dataclass(frozen=True)
class StopRequest:
    """A reduce-only stop-market order on the mark price, as the adapter hands it to a
    dialect: ``close_position`` closes whatever the position holds when it fires."""

    symbol: str
    side: str
    quantity: Decimal
    trigger_price: Decimal
    client_id: str
    close_position: bool = False
