"""Price bands: the open interval of prices in which a decision cannot change.

Why: the ingest process sees every tick but must enqueue work only for ticks that matter.
Each decision module publishes, per position, the band inside which its decision is
guaranteed to be "nothing to do"; the ingest skips ticks strictly inside it. A band is
conservative by construction (it may be narrower than the true no-op region, never wider),
and carries ``valid_until`` because some decisions also change with time (time-based
activation, rate-limit expiry, the aged target's growth).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


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
        low = _max_opt(self.low, other.low)
        high = _min_opt(self.high, other.high)
        until = _min_opt_dt(self.valid_until, other.valid_until)
        return PriceBand(low, high, until)


def _max_opt(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _min_opt(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _min_opt_dt(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
