"""Price bands: the open interval of prices in which a decision cannot change.

Why: the ingest process sees every tick but must enqueue work only for ticks that matter.
Each decision module publishes, per position, the band inside which its decision is
guaranteed to be "nothing to do"; the ingest skips ticks strictly inside it. A band is
conservative by construction (it may be narrower than the true no-op region, never wider),
and carries ``valid_until`` because some decisions also change with time (time-based
activation, rate-limit expiry, the aged target's growth).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class PriceBand:
    """Open interval ``(low, high)``; ``None`` bounds are unbounded on that side.

    ``valid_until``: after this instant the band must be recomputed (``None``: no time limit).
    """

    low: Decimal | None
    high: Decimal | None
    valid_until: datetime | None = None

    @classmethod
    def unbounded(cls, valid_until: datetime | None = None) -> PriceBand:
        """No price can change anything (e.g. nothing to watch for this position)."""
        return cls(None, None, valid_until)

    @classmethod
    def empty(cls, valid_until: datetime | None = None) -> PriceBand:
        """Every tick matters (e.g. a deferred stop move is due)."""
        return cls(Decimal(0), Decimal(0), valid_until)

    @property
    def is_empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high

    def contains(self, price: Decimal, now: datetime | None = None) -> bool:
        """True when ``price`` is strictly inside the band (and the band is still valid)."""
        if now is not None and self.valid_until is not None and now >= self.valid_until:
            return False
        if self.low is not None and not price > self.low:
            return False
        return self.high is None or price < self.high

    def intersect(self, other: PriceBand) -> PriceBand:
        """The band in which neither of two decisions can change (for one symbol)."""
        low = _tighter(self.low, other.low, max)
        high = _tighter(self.high, other.high, min)
        until = _tighter(self.valid_until, other.valid_until, min)
        return PriceBand(low, high, until)


Bound = TypeVar("Bound", Decimal, datetime)


def _tighter(
    a: Bound | None, b: Bound | None, pick: Callable[[Bound, Bound], Bound]
) -> Bound | None:
    """The bound of two that ``pick`` keeps (``max`` for a low, ``min`` for a high or an
    expiry); a missing bound is no bound, so the other one holds."""
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)
