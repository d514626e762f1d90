"""The arithmetic of a USDT-margined futures account, shared by both dialects of the
paper exchange.

Binance and Bybit differ in names, ids, error codes and in which orders they accept; what a
fill costs in fees, what an order needs in margin, where a taker fills and when a limit
order becomes marketable is the same for both, so it lives here once (``sim/matching.py``
is the Binance engine, ``sim/bybit/engine.py`` the Bybit one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sim.orders import ZERO, Position
from sim.prices import PriceBook

FEE_QUANTUM = Decimal("0.00000001")


@dataclass
class EngineConfig:
    balance: Decimal = Decimal("10000")
    taker_fee: Decimal = Decimal("0.0005")
    maker_fee: Decimal = Decimal("0.0002")
    slippage_bps: Decimal = Decimal(0)
    default_leverage: int = 20

    def fee(self, qty: Decimal, price: Decimal, *, maker: bool) -> tuple[Decimal, Decimal]:
        """The rate a fill pays and its fee, to the precision both venues report."""
        rate = self.maker_fee if maker else self.taker_fee
        return rate, (qty * price * rate).quantize(FEE_QUANTUM)

    def opening_cost(self, opening: Decimal, price: Decimal, leverage: int) -> Decimal:
        """What the part of an order that opens exposure needs of the available balance:
        its initial margin and the taker fee it will pay."""
        return opening * price / leverage + opening * price * self.taker_fee

    def taker_price(self, prices: PriceBook, symbol: str, *, buying: bool) -> Decimal:
        """Where a market order fills: the mark, moved against the taker by the slippage,
        on the symbol's tick grid."""
        mark = prices.prices[symbol]
        direction = Decimal(1) if buying else Decimal(-1)
        return prices.round(symbol, mark + mark * self.slippage_bps / Decimal(10000) * direction)


def capped_by_limit(taker: Decimal, limit: Decimal, *, buying: bool) -> Decimal:
    """A marketable limit order fills at the taker price, never beyond its limit."""
    return min(taker, limit) if buying else max(taker, limit)


def crosses(limit: Decimal, mark: Decimal, *, buying: bool) -> bool:
    """A limit order is marketable once the mark has come to it."""
    return limit >= mark if buying else limit <= mark


def partial_quantity(qty: Decimal, fraction: Decimal, step: Decimal) -> Decimal:
    """The part of ``qty`` a partial fill executes: ``fraction`` of it, down to the lot step."""
    return (qty * fraction / step).to_integral_value(rounding=ROUND_DOWN) * step


def executable_quantity(
    remaining: Decimal, reducible: Decimal | None, fraction: Decimal | None, step: Decimal
) -> Decimal:
    """What one execution of an order fills, as on both venues: a reduce-only order no more
    than the position it reduces (``reducible``; None for an order that may open), and a
    partial fill its ``fraction`` of that, down to the lot step."""
    qty = remaining if reducible is None else min(remaining, reducible)
    return qty if fraction is None else partial_quantity(qty, fraction, step)


def unrealized_pnl(amount: Decimal, entry_price: Decimal, mark: Decimal) -> Decimal:
    """The open profit of a signed position amount at ``mark``."""
    return amount * (mark - entry_price) if amount else ZERO


def position_margin(amount: Decimal, mark: Decimal, leverage: int) -> Decimal:
    """The initial margin a position holds at ``mark``."""
    return abs(amount) * mark / leverage


class MarginAccount:
    """The balance of an account, made up the same way on both venues: the wallet, plus the
    open profit of the positions, less the margin they and the resting orders hold.

    Each engine keeps its positions as it likes (Bybit has hedge slots) and says which of
    its orders hold margin (``order_margin``).
    """

    config: EngineConfig
    prices: PriceBook
    wallet: Decimal
    positions: Mapping[Any, Position]

    def mark(self, symbol: str) -> Decimal:
        return self.prices.prices[symbol]

    def unrealized(self, pos: Position) -> Decimal:
        return unrealized_pnl(pos.amount, pos.entry_price, self.mark(pos.symbol))

    def position_margin(self, pos: Position) -> Decimal:
        return position_margin(pos.amount, self.mark(pos.symbol), pos.leverage)

    def order_margin(self) -> Decimal:
        raise NotImplementedError

    def available(self) -> Decimal:
        live = list(self.positions.values())
        upnl = sum((self.unrealized(p) for p in live), ZERO)
        used = sum((self.position_margin(p) for p in live), ZERO)
        return self.wallet + upnl - used - self.order_margin()

    def affords(self, opening: Decimal, price: Decimal, leverage: int) -> bool:
        """The available balance covers what opening ``opening`` at ``price`` costs."""
        return self.config.opening_cost(opening, price, leverage) <= self.available()
