"""Turning ccxt's loosely typed answers into the engine's values (Decimal, aware datetimes).

Every number from an exchange becomes ``Decimal(str(x))`` here, never a float.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def dec0(value: Any) -> Decimal:
    return dec(value) or Decimal(0)


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def ts(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC) if ms else None


def first_nonzero(*values: Any) -> Decimal | None:
    """The first value that is a non-zero number (venues send 0 or "" for "none")."""
    for value in values:
        number = dec(value)
        if number:
            return number
    return None
