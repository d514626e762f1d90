"""Small time helpers for the pure decisions.

Why: a naive datetime compared with an aware one raises in one place and silently shifts by
the host's offset in another. Decisions take ``now`` as a parameter and reject naive values
up front, so a service that forgot the timezone fails loudly in tests, not in production.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal


def require_aware(value: datetime, name: str = "now") -> datetime:
    """Return ``value`` converted to UTC; raise ValueError if it is naive (a caller bug)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def seconds(delta: timedelta) -> Decimal:
    """Exact seconds of a timedelta as Decimal (no float rounding on long durations)."""
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(
        1_000_000
    )


def hours(delta: timedelta) -> Decimal:
    """Exact hours of a timedelta as Decimal."""
    return seconds(delta) / Decimal(3600)


#: Past this many doublings every sane ceiling is reached; the cap keeps the power finite.
MAX_DOUBLINGS = 64


def doubling_delay(first: float, doublings: int, ceiling: float) -> float:
    """A wait that doubles with each failure in a row, from ``first`` up to ``ceiling``
    (seconds): a failing close, an undelivered alert, a process that keeps dying."""
    return min(ceiling, first * 2 ** min(max(doublings, 0), MAX_DOUBLINGS))
