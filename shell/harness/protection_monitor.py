"""Measures, from the exchange's side, how long any position was without a live stop.

A background thread samples the account (all positions and all open orders: three requests
a sample, whatever the number of positions) and tracks, per symbol, the intervals in which an
open position had no stop covering its whole quantity. Each gap is labelled with what the
engine's database said about the position when the gap was first seen: an *opening* gap
(entry filled, stop not yet placed: inherent to a market entry followed by a stop) or an
*established* one (a position the engine considered protected: the number that must stay 0,
or bounded by the protection interval after outside interference).

Sampling bounds the resolution: a gap shorter than the interval may go unseen; the report
states the interval so the figure is read with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.domain.orders import covers, stops_for
from core.exchange.adapter import ExchangeAdapter
from core.exchange.errors import ExchangeFailure
from shell.runtime.background import BackgroundThread


@dataclass
class Gap:
    symbol: str
    kind: str  # "opening" or "established"
    started: float
    ended: float | None = None

    def seconds(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


@dataclass
class MonitorReport:
    interval: float
    samples: int
    failed_samples: int
    gaps: list[Gap] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def worst(self, count: int = 5, now: float | None = None) -> list[dict[str, Any]]:
        """The ``count`` longest gaps: symbol, kind, start (s into the run) and length."""
        now = now if now is not None else time.monotonic()
        ranked = sorted(self.gaps, key=lambda g: g.seconds(now), reverse=True)[:count]
        return [
            {
                "symbol": g.symbol,
                "kind": g.kind,
                "at": round(g.started - self.started, 1),
                "seconds": round(g.seconds(now), 2),
            }
            for g in ranked
        ]

    def longest(self, kind: str | None = None, now: float | None = None) -> float:
        now = now if now is not None else time.monotonic()
        spans = [g.seconds(now) for g in self.gaps if kind is None or g.kind == kind]
        return max(spans, default=0.0)


class ProtectionMonitor(BackgroundThread):
    """Run with ``start()``; ``stop()`` returns the report.

    ``status_of(symbol)`` tells the engine's view of the symbol's position (a status string or
    None); statuses in ``opening_statuses`` make a gap an opening gap.
    """

    def __init__(
        self,
        adapter: ExchangeAdapter,
        status_of: Callable[[str], str | None],
        *,
        interval: float = 0.25,
        opening_statuses: frozenset[str] = frozenset(
            {"pending_entry", "entry_placed", "pending_sl", "closing"}
        ),
    ) -> None:
        super().__init__("protection-monitor")
        self.adapter = adapter
        self.status_of = status_of
        self.interval = interval
        self.opening_statuses = opening_statuses
        self.report = MonitorReport(interval=interval, samples=0, failed_samples=0)
        self._open: dict[str, Gap] = {}

    def stop(self) -> MonitorReport:
        self._signal_stop(join_timeout=10)
        now = time.monotonic()
        for gap in self._open.values():
            gap.ended = now
        self._open.clear()
        return self.report

    def current_gaps(self) -> dict[str, float]:
        now = time.monotonic()
        return {symbol: gap.seconds(now) for symbol, gap in self._open.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except ExchangeFailure:
                self.report.failed_samples += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def sample(self) -> None:
        positions = [p.to_domain() for p in self.adapter.positions()]
        orders = [o.to_domain() for o in self.adapter.open_orders()]
        now = time.monotonic()
        self.report.samples += 1
        unprotected = {
            p.symbol
            for p in positions
            if not any(covers(stop, p.quantity) for stop in stops_for(p, orders))
        }
        for symbol in unprotected - self._open.keys():
            kind = "opening" if self.status_of(symbol) in self.opening_statuses else "established"
            gap = Gap(symbol, kind, now)
            self._open[symbol] = gap
            self.report.gaps.append(gap)
        for symbol in set(self._open) - unprotected:
            self._open.pop(symbol).ended = now
