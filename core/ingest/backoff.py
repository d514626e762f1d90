"""Exponential backoff with full jitter, for reconnects and storage retries.

Why jitter: after a signal-service restart every client reconnects; without jitter they do
so in lockstep and hit it together again. "Full jitter" (a uniform draw between zero and the
exponential bound) spreads them while keeping the bound. A floor of half the first delay
keeps a refused connection from ever being retried in a hot loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives the next wait in seconds; ``reset()`` after a healthy period."""

    first: float
    ceiling: float
    factor: float = 2.0
    draw: Callable[[float, float], float] = field(default=random.uniform)
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise ValueError("need 0 < first <= ceiling")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")

    def bound(self) -> float:
        """The upper bound of the next wait (before jitter)."""
        # the exponent is capped: past 64 doublings every sane ceiling is reached anyway
        return min(self.ceiling, self.first * self.factor ** min(self.attempts, 64))

    def next(self) -> float:
        bound = self.bound()
        self.attempts += 1
        floor = self.first / 2
        return max(floor, min(bound, self.draw(floor, bound)))

    def reset(self) -> None:
        self.attempts = 0
