"""Position sides and order sides, shared by every decision module.

Why an enum and not strings: a typo such as ``"Long"`` or ``"buy"`` where a position side is
meant silently inverts a stop in string-typed code. The wire and the database keep the plain
values (``"long"``/``"short"``, ``"buy"``/``"sell"``), which these enums are.
"""

from __future__ import annotations

from enum import StrEnum


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
