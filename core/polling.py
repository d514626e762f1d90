"""Bounded polling with growing intervals: the one way the engine waits for the exchange.

Why one helper: waiting for a fill, for an order to show up after a lost answer, or for a
position to disappear after a close are the same loop, and a fixed long sleep both wastes
time when the answer is quick and hides a hang when it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")


@dataclass
class Poll:
    """Probe until an answer (not None) or the timeout; intervals double up to a ceiling."""

    timeout: float
    first: float = 0.05
    ceiling: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def until(self, probe: Callable[[], R | None]) -> R | None:
        deadline = self.monotonic() + self.timeout
        delay = self.first
        while True:
            result = probe()
            if result is not None or self.monotonic() >= deadline:
                return result
            self.sleep(min(delay, max(0.0, deadline - self.monotonic())))
            delay = min(delay * 2, self.ceiling)
