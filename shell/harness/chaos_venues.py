"""``vigil chaos --exchange both``: the chaos run on a deployment trading both venues.

The faults of the run (exchange faults, acts by hand, killed workers, ingest, Redis,
PostgreSQL, the whole stack) are injected as on one venue, on the first venue (Binance) and
on the processes both venues share. The second venue (Bybit) trades meanwhile on symbols of
its own (so no symbol-keyed step of the faults can mistake its positions for the first
venue's): waves from the same signal stream, prices that move, its own protection monitor.
At the end each venue is audited on its own; the run is clean only if both are. What this
shows beyond the one-venue run: the shared processes' deaths are recovered on both venues,
and one venue's exchange faults and acts by hand leave the other venue's positions alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from shell.harness.demo import DemoSystem, _price, status_of
from shell.harness.protection_monitor import MonitorReport, ProtectionMonitor

SECOND_VENUE = "bybit"
# the second venue's symbols: listed by both paper exchanges, none of the first venue's
SECOND_SYMBOLS = ["DOTUSDT", "BCHUSDT", "TRXUSDT", "ATOMUSDT", "NEARUSDT", "ETCUSDT", "UNIUSDT"]


def both_venues_environment(secrets: dict[str, str], second_url: str) -> dict[str, str]:
    """The settings that add the second venue (its own paper exchange, the run's keys)."""
    return {
        "VIGIL_EXCHANGES": f"binance,{SECOND_VENUE}",
        f"VIGIL_{SECOND_VENUE.upper()}_EXCHANGE_URL": second_url,
        # every paper exchange of the run is started with the run's distinctive key pair
        f"VIGIL_{SECOND_VENUE.upper()}_API_KEY": secrets["VIGIL_API_KEY"],
        f"VIGIL_{SECOND_VENUE.upper()}_API_SECRET": secrets["VIGIL_API_SECRET"],
    }


@dataclass
class SecondVenue:
    """The venue that trades beside the faults: its waves, its prices, its monitor."""

    system: DemoSystem
    seed: int
    wave_every: float
    monitor: ProtectionMonitor | None = None
    next_wave: float = 2.0
    next_move: float = 6.0
    waves: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"second-venue:{self.seed}")  # noqa: S311 - a replayable run

    def start(self) -> SecondVenue:
        self.monitor = ProtectionMonitor(
            self.system.deps.exchange,
            partial(status_of, exchange=self.system.venue),
            interval=0.25,
        ).start()
        return self

    def tick(self, elapsed: float) -> None:
        """Emit a wave or move a price when due; an exchange busy being faulted is skipped."""
        try:
            if elapsed >= self.next_wave:
                self.next_wave += self.wave_every
                symbols = self.rng.sample(SECOND_SYMBOLS, 3)
                self.system.emit(
                    [
                        (s, self.rng.choice(["BUY", "SELL"]), self.rng.randint(60, 95))
                        for s in symbols
                    ]
                )
                self.waves += 1
            if elapsed >= self.next_move:
                self.next_move += 3.0
                symbol = self.rng.choice(SECOND_SYMBOLS)
                factor = Decimal(str(round(self.rng.uniform(0.985, 1.025), 4)))
                target = _price(self.system, symbol) * factor
                body = {"symbol": symbol, "target": str(target), "seconds": 15}
                self.system.admin("/_sim/path", body)
        except OSError:
            pass  # the signal source or the exchange is being restarted (stack_kill)

    def stop(self) -> MonitorReport | None:
        return self.monitor.stop() if self.monitor is not None else None


@dataclass
class CombinedReport:
    """The invariant reports of every venue, read as one (``.violations``, ``.clean``)."""

    reports: list[Any]

    @property
    def violations(self) -> list[Any]:
        return [v for report in self.reports for v in report.violations]

    @property
    def errors(self) -> list[Any]:
        return [e for report in self.reports for e in report.errors]

    @property
    def clean(self) -> bool:
        return all(report.clean for report in self.reports)


def merge_gaps(first: MonitorReport, second: MonitorReport | None, venue: str) -> MonitorReport:
    """The first venue's monitor report with the second venue's gaps added, their symbols
    named ``venue:SYMBOL``; the sample counts stay the first monitor's."""
    if second is None:
        return first
    for gap in second.gaps:
        gap.symbol = f"{venue}:{gap.symbol}"
        first.gaps.append(gap)
    first.failed_samples += second.failed_samples
    return first


def positions_by_status(venue: str) -> dict[str, int]:
    """How many of ``venue``'s positions ended in each status (the second venue's share)."""
    from sqlalchemy import func, select

    from core.db.models import Position
    from core.db.session import unit_of_work

    with unit_of_work() as s:
        rows = s.execute(
            select(Position.status, func.count())
            .where(Position.exchange == venue)
            .group_by(Position.status)
        ).all()
    return {status: int(count) for status, count in rows}
