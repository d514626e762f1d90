"""An exchange read done at most once per ``ttl`` seconds, its result shared by every caller.

Why one home: the health checks, ``/metrics`` and the console's book all show what the venue
has, and a tight poller of any of them must not eat the venue's rate limit. Each cached its
read with its own lock and clock; here the rule is written once: within ``ttl`` of the last
attempt, callers get the last reading; a failed attempt keeps the last good value beside the
failure, so a caller chooses to show the old value or to raise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.exchange.errors import ExchangeFailure

T = TypeVar("T")


@dataclass(frozen=True)
class Reading(Generic[T]):
    value: T  # the last good value (the initial one until a read succeeds)
    read_at: float  # wall-clock time (epoch s) the value's read started; 0 before any
    error: ExchangeFailure | None  # the last attempt's failure, None when it succeeded


class ThrottledRead(Generic[T]):
    def __init__(self, read: Callable[[], T], ttl: float, initial: T) -> None:
        self.read = read
        self.ttl = ttl
        self._lock = threading.Lock()
        self._attempted: float | None = None  # monotonic time of the last attempt
        self._reading = Reading(initial, 0.0, None)

    def latest(self) -> Reading[T]:
        """The last reading, read again first when the last attempt is older than ``ttl``."""
        with self._lock:
            if self._attempted is None or time.monotonic() - self._attempted > self.ttl:
                started = time.time()
                try:
                    self._reading = Reading(self.read(), started, None)
                except ExchangeFailure as exc:
                    self._reading = Reading(self._reading.value, self._reading.read_at, exc)
                self._attempted = time.monotonic()
            return self._reading
