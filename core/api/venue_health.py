"""``/metrics`` for every venue of the deployment (the default one too).

The per-venue ``/health`` components live with the rest of system health
(``core/services/venue_health.py``); both read a venue's open orders through the same cached
reader, at most once per ``VIGIL_HEALTH_CACHE_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position
from core.db.session import new_session
from core.domain.positions import NON_TERMINAL
from core.exchange.errors import ExchangeFailure
from core.services.health import ExchangeReads
from core.services.invariants import find_unprotected, load_open_rows
from core.services.venue_health import venue_reads
from core.venues import configured_venues


class VenueCollector(Collector):
    """Per-venue metrics for every configured venue (the default one too):
    ``vigil_venue_positions{exchange,status}``, ``vigil_venue_exchange_up{exchange}`` (1 when
    its open orders could be read) and ``vigil_venue_unprotected_positions{exchange}``
    (absent for a venue that cannot be read)."""

    def __init__(self, settings: Settings, default_reads: ExchangeReads, default: str) -> None:
        self.settings = settings
        self.default_reads = default_reads
        self.default = default

    def _reads(self, venue: str) -> ExchangeReads:
        if venue == self.default:
            return self.default_reads
        return venue_reads(venue, self.settings.health_cache_seconds)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        venues = configured_venues(self.settings)
        positions = GaugeMetricFamily(
            "vigil_venue_positions",
            "Non-terminal positions by venue and status.",
            labels=["exchange", "status"],
        )
        up = GaugeMetricFamily(
            "vigil_venue_exchange_up",
            "1 when the venue's open orders could be read.",
            labels=["exchange"],
        )
        unprotected = GaugeMetricFamily(
            "vigil_venue_unprotected_positions",
            "Active positions without a live stop.",
            labels=["exchange"],
        )
        try:
            with new_session() as session:
                counts = self._counts(session, venues)
                rows = {venue: load_open_rows(session, venue) for venue in venues}
        except SQLAlchemyError:
            return  # the database's own metrics say it is gone
        for (venue, status), count in sorted(counts.items()):
            positions.add_metric([venue, status], count)
        for venue in venues:
            try:
                orders = self._reads(venue).orders()
            except ExchangeFailure:
                up.add_metric([venue], 0)
                continue
            up.add_metric([venue], 1)
            unprotected.add_metric([venue], len(find_unprotected(rows[venue], orders)))
        yield positions
        yield up
        yield unprotected

    @staticmethod
    def _counts(session: Session, venues: tuple[str, ...]) -> dict[tuple[str, str], int]:
        found = dict.fromkeys(((v, s.value) for v in venues for s in NON_TERMINAL), 0)
        for venue, status, count in session.execute(
            select(Position.exchange, Position.status, func.count(Position.id))
            .where(
                Position.exchange.in_(venues),
                Position.status.in_([s.value for s in NON_TERMINAL]),
            )
            .group_by(Position.exchange, Position.status)
        ).all():
            found[(venue, status)] = int(count)
        return found
