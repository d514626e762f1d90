"""Mark prices of the paper exchange: seeded random walks, CSV replay and scripted moves.

Every source is deterministic for a given seed and tick count, so a failing test or a
chaos run can be replayed exactly. Prices are `Decimal`, always on the symbol's tick grid.
Each symbol has its own generator seeded from (seed, symbol), so listing another symbol
does not change the path of the others.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from sim.markets import Market

SECONDS_PER_YEAR = 365 * 24 * 3600

#: Annualised volatility per named scenario; a path ending in .csv means replay.
SCENARIOS: dict[str, float] = {"frozen": 0.0, "calm": 0.3, "normal": 0.8, "volatile": 3.0}


@dataclass
class LinearPath:
    """A scripted move: from `start` to `target` over `ticks` ticks."""

    start: Decimal
    target: Decimal
    ticks: int
    done: int = 0

    def step(self) -> Decimal:
        self.done = min(self.ticks, self.done + 1)
        fraction = Decimal(self.done) / Decimal(self.ticks)
        return self.start + (self.target - self.start) * fraction

    @property
    def finished(self) -> bool:
        return self.done >= self.ticks


@dataclass
class Walk:
    """Geometric Brownian motion parameters of one symbol (annualised)."""

    volatility: float
    drift: float = 0.0


@dataclass(frozen=True)
class ReplayRow:
    offset_ms: int
    symbol: str
    price: Decimal


def load_replay(path: Path) -> list[ReplayRow]:
    """Read (timestamp_ms, symbol, price) rows; timestamps become offsets from the first."""
    rows: list[tuple[int, str, Decimal]] = []
    with path.open(newline="") as handle:
        for record in csv.reader(handle):
            if len(record) < 3 or not record[0].strip().lstrip("-").isdigit():
                continue  # header or blank line
            rows.append((int(record[0]), record[1].strip().upper(), Decimal(record[2].strip())))
    rows.sort(key=lambda r: r[0])
    if not rows:
        return []
    first = rows[0][0]
    return [ReplayRow(ts - first, sym, price) for ts, sym, price in rows]


class PriceBook:
    """The current mark price of every symbol and the sources that move it."""

    def __init__(
        self,
        markets: dict[str, Market],
        *,
        seed: int,
        tick_interval: float,
        volatility: float = 0.8,
        replay: list[ReplayRow] | None = None,
    ) -> None:
        self._markets = markets
        self._seed = seed
        self.tick_interval = tick_interval
        self.prices: dict[str, Decimal] = {s: m.price for s, m in markets.items()}
        self._rngs = {s: random.Random(f"{seed}:{s}") for s in markets}  # noqa: S311
        self.walks: dict[str, Walk] = {s: Walk(volatility) for s in markets}
        self.paths: dict[str, LinearPath] = {}
        self.pinned: set[str] = set()
        self._replay = replay or []
        self._replay_pos = 0
        self.ticks = 0

    # -- scripted control ---------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> Decimal:
        """Set a price by hand; it holds (no random walk) until `set_walk` for the symbol."""
        value = self.round(symbol, price)
        self.prices[symbol] = value
        self.paths.pop(symbol, None)
        self.pinned.add(symbol)
        return value

    def set_path(self, symbol: str, target: Decimal, seconds: float) -> None:
        ticks = max(1, math.ceil(seconds / self.tick_interval))
        self.paths[symbol] = LinearPath(self.prices[symbol], target, ticks)
        self.pinned.add(symbol)

    def set_walk(self, symbol: str | None, volatility: float, drift: float) -> None:
        targets = [symbol] if symbol else list(self._markets)
        for name in targets:
            self.walks[name] = Walk(volatility, drift)
            self.pinned.discard(name)
            self.paths.pop(name, None)

    def round(self, symbol: str, price: Decimal) -> Decimal:
        tick = self._markets[symbol].tick_size
        steps = (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return max(tick, steps * tick)

    # -- time ---------------------------------------------------------------------------

    def tick(self) -> list[str]:
        """Advance one tick; returns the symbols whose price changed."""
        self.ticks += 1
        changed: list[str] = []
        for symbol in self._markets:
            new = self._next_price(symbol)
            if new is not None and new != self.prices[symbol]:
                self.prices[symbol] = new
                changed.append(symbol)
        changed.extend(self._advance_replay())
        return list(dict.fromkeys(changed))  # a symbol replayed twice in one tick moved once

    def _next_price(self, symbol: str) -> Decimal | None:
        path = self.paths.get(symbol)
        if path is not None:
            value = self.round(symbol, path.step())
            if path.finished:
                del self.paths[symbol]
            return value
        # Draw even when pinned so every symbol's random sequence only depends on ticks.
        shock = self._rngs[symbol].gauss(0.0, 1.0)
        walk = self.walks[symbol]
        if symbol in self.pinned or walk.volatility <= 0 and walk.drift == 0:
            return None
        dt = self.tick_interval / SECONDS_PER_YEAR
        exponent = (walk.drift - walk.volatility**2 / 2) * dt + walk.volatility * math.sqrt(
            dt
        ) * shock
        factor = Decimal(repr(math.exp(exponent)))
        return self.round(symbol, self.prices[symbol] * factor)

    def _advance_replay(self) -> list[str]:
        if not self._replay:
            return []
        clock_ms = int(self.ticks * self.tick_interval * 1000)
        changed: list[str] = []
        while self._replay_pos < len(self._replay):
            row = self._replay[self._replay_pos]
            if row.offset_ms > clock_ms:
                break
            self._replay_pos += 1
            if row.symbol in self.prices:
                self.prices[row.symbol] = self.round(row.symbol, row.price)
                self.pinned.add(row.symbol)
                changed.append(row.symbol)
        return changed
