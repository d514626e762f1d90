"""One Bybit simulator instance's memory: a `SimState` whose account is a `BybitEngine`.

Subclassing keeps everything dialect-neutral where it is (market table, seeded prices,
scenario replay, tick, faults, request log, scheduling), so the shared admin handlers
(`/_sim/price`, `/_sim/tick`, `/_sim/fault`, ...) and the server's tick loop work on it
unchanged. Only `reset` differs: it builds Bybit's account, and keeps the knobs of
`BybitSettings` across resets (they are configuration, not account state).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from sim.auth import KeyPair
from sim.bybit.auth import BybitAuth
from sim.bybit.engine import BybitEngine, Publish
from sim.bybit.settings import BybitSettings
from sim.state import SimOptions, SimState


@dataclass(frozen=True)
class LimitStatus:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int


class OrderRateLimiter:
    """Bybit's per-UID limit on order endpoints: N calls per rolling second, per endpoint."""

    WINDOW_MS = 1000

    def __init__(self) -> None:
        self._hits: dict[str, deque[int]] = {}

    def admit(self, endpoint: str, limit: int) -> LimitStatus:
        now = int(time.time() * 1000)
        hits = self._hits.setdefault(endpoint, deque())
        while hits and hits[0] <= now - self.WINDOW_MS:
            hits.popleft()
        allowed = len(hits) < limit
        if allowed:
            hits.append(now)
        reset = (hits[0] if hits else now) + self.WINDOW_MS
        return LimitStatus(allowed, limit, max(0, limit - len(hits)), reset)

    def clear(self) -> None:
        self._hits.clear()


class BybitState(SimState):
    """Markets, prices, faults and request log of `SimState`, with a Bybit account."""

    engine: BybitEngine  # type: ignore[assignment]

    def __init__(self, options: SimOptions, publish: Publish) -> None:
        self.settings = BybitSettings()
        self.limiter = OrderRateLimiter()
        self.bybit_auth = BybitAuth(options.api_key, options.api_secret)
        self._topic_publish = publish
        super().__init__(options, lambda _event: None)

    def key_pairs(self) -> list[KeyPair]:
        return [self.bybit_auth, self.auth]

    def reset(self, seed: int | None = None, balance: Decimal | None = None) -> None:
        super().reset(seed, balance)
        self.limiter.clear()

    def _new_engine(self) -> BybitEngine:  # type: ignore[override]
        return BybitEngine(
            self.markets, self.prices, self.options.engine, self.settings, self._topic_publish
        )
