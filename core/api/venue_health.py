"""``/health`` and ``/metrics`` for every venue of the deployment beyond the default one.

Why separate components per venue (``exchange:bybit``, ``unprotected_positions:bybit``): with
``VIGIL_EXCHANGES=binance,bybit`` a Bybit outage or an unprotected Bybit position must fail
``/health`` and page just as the default venue's would, and say which venue it is. The
default venue keeps its components' names (``exchange``, ``unprotected_positions``), so a
single-venue deployment sees no change. Each venue's open orders are read at most once per
``VIGIL_HEALTH_CACHE_SECONDS``, through that venue's own client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.api.health import FAIL, OK, Component, ExchangeReads, _first_line
from core.config import Settings
from core.db.models import Position
from core.db.session import new_session
from core.domain.positions import NON_TERMINAL
from core.exchange.errors import ExchangeFailure
from core.services.deps import deps_for
from core.services.invariants import find_unprotected, load_open_rows
from core.venues import configured_venues

if TYPE_CHECKING:
    from core.api.health import HealthChecker

_READS: dict[str, ExchangeReads] = {}
_LOCK = threading.Lock()


def _reads_for(venue: str, ttl: float) -> ExchangeReads:
    with _LOCK:
        if venue not in _READS:
            _READS[venue] = ExchangeReads(lambda: deps_for(venue), ttl)
        return _READS[venue]


def other_venue_checks(checker: HealthChecker) -> dict[str, Callable[[], Component]]:
    """The components of each configured venue other than the checker's own."""
    own = checker.exchange_name or checker.deps_factory().exchange_name
    checks: dict[str, Callable[[], Component]] = {}
    for venue in configured_venues(checker.settings):
        if venue == own:
            continue
        reads = _reads_for(venue, checker.settings.health_cache_seconds)
        checks[f"exchange:{venue}"] = partial(_exchange, reads)
        checks[f"unprotected_positions:{venue}"] = partial(_unprotected, venue, reads)
    return checks


def _exchange(reads: ExchangeReads) -> Component:
    try:
        orders = reads.orders()
    except ExchangeFailure as exc:
        return Component(FAIL, {"error": f"{type(exc).__name__}: {_first_line(exc)}"})
    return Component(OK, {"open_orders": len(orders)})


def _unprotected(venue: str, reads: ExchangeReads) -> Component:
    try:
        with new_session() as session:
            rows = load_open_rows(session, venue)
        orders = reads.orders()
    except (SQLAlchemyError, ExchangeFailure) as exc:
        return Component(FAIL, {"error": f"cannot tell: {_first_line(exc)}"})
    found = find_unprotected(rows, orders)
    detail: dict[str, Any] = {"count": len(found)}
    if found:
        detail["positions"] = [
            {"position_id": v.position_id, "symbol": v.symbol, "detail": v.detail} for v in found
        ]
    return Component(FAIL if found else OK, detail)


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
        return _reads_for(venue, self.settings.health_cache_seconds)

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
