"""The Decimal constants the rules share: money and prices are Decimal, and a bare ``0`` or
``100`` in a Decimal formula is an int that hides where the exactness comes from."""

from __future__ import annotations

from decimal import Decimal

ZERO = Decimal(0)
ONE = Decimal(1)
TWO = Decimal(2)
HUNDRED = Decimal(100)
