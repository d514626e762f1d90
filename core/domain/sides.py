"""Position sides and order sides, shared by every decision module.

Why an enum and not strings: a typo such as ``"Long"`` or ``"buy"`` where a position side is
meant silently inverts a stop in string-typed code. The wire and the database keep the plain
values (``"long"``/``"short"``, ``"buy"``/``"sell"``), which these enums are.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from core.domain.numbers import HUNDRED, ONE


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> OrderSide:
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class Side(StrEnum):
    """The side of a position."""

    LONG = "long"
    SHORT = "short"

    @property
    def opposite(self) -> Side:
        return Side.SHORT if self is Side.LONG else Side.LONG

    @property
    def entry_order_side(self) -> OrderSide:
        """The order side that opens (or increases) a position of this side."""
        return OrderSide.BUY if self is Side.LONG else OrderSide.SELL

    @property
    def close_order_side(self) -> OrderSide:
        """The order side that reduces or closes a position of this side (its stop's side)."""
        return OrderSide.SELL if self is Side.LONG else OrderSide.BUY

    @classmethod
    def from_order_side(cls, side: OrderSide) -> Side:
        """The position side an entry order of ``side`` opens."""
        return cls.LONG if side is OrderSide.BUY else cls.SHORT


def price_in_favour(price: Decimal, pct: Decimal, side: Side) -> Decimal:
    """``pct`` % from ``price`` in a ``side`` position's favour (above it for a long): where
    its profit levels lie (trailing activation, breakeven, a profit target)."""
    return price * (ONE + pct / HUNDRED if side is Side.LONG else ONE - pct / HUNDRED)


def price_against(price: Decimal, pct: Decimal, side: Side) -> Decimal:
    """``pct`` % from ``price`` against a ``side`` position (below it for a long): where a
    stop that far from ``price`` lies (unrounded, unchecked)."""
    return price * (ONE - pct / HUNDRED if side is Side.LONG else ONE + pct / HUNDRED)
