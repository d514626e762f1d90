"""Prometheus collectors the API computes itself: state from the database and the exchange.

Worker-side instruments (tasks, latencies, exchange errors, lock waits) come from Redis
(core/metrics.py); these are read at scrape time from the durable record:

- ``vigil_positions{exchange, status}``: non-terminal positions by status;
- ``vigil_unprotected_positions``: active positions without a live stop (the shared,
  cached exchange read; absent when the exchange cannot be read);
- ``vigil_events_total{type, severity}``: events written, counted incrementally by id so a
  scrape costs one indexed range read (and the counter stays monotonic while the retention
  job deletes old rows);
- ``vigil_alerts{status}``: alert rows by delivery status;
- ``vigil_heartbeat_age_seconds{component}``: seconds since each component's last beat.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core.clock import Clock
from core.db.models import Alert, Event, Heartbeat, Position
from core.db.session import new_session
from core.domain.positions import NON_TERMINAL
from core.exchange.errors import ExchangeFailure
from core.services.health import ExchangeReads
from core.services.invariants import find_unprotected, load_open_rows


class EventCounter:
    """Events by (type, severity), counted from the last id seen by this process."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.last_id = 0
        self._lock = threading.Lock()

    def refresh(self) -> dict[tuple[str, str], int]:
        with self._lock, new_session() as session:
            rows = session.execute(
                select(Event.type, Event.severity, func.count(Event.id), func.max(Event.id))
                .where(Event.id > self.last_id)
                .group_by(Event.type, Event.severity)
            ).all()
            for type_, severity, count, max_id in rows:
                self.counts[(type_, severity)] += int(count)
                self.last_id = max(self.last_id, int(max_id))
            return dict(self.counts)


class StateCollector(Collector):
    def __init__(self, exchange: str, reads: ExchangeReads, clock: Clock) -> None:
        self.exchange = exchange
        self.reads = reads
        self.clock = clock
        self.events = EventCounter()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        positions = GaugeMetricFamily(
            "vigil_positions", "Non-terminal positions by status.", labels=["exchange", "status"]
        )
        alerts = GaugeMetricFamily("vigil_alerts", "Alert rows by status.", labels=["status"])
        ages = GaugeMetricFamily(
            "vigil_heartbeat_age_seconds",
            "Seconds since each component's last heartbeat.",
            labels=["component"],
        )
        now = self.clock.now()
        with new_session() as session:
            by_status = dict(
                session.execute(
                    select(Position.status, func.count(Position.id))
                    .where(
                        Position.exchange == self.exchange,
                        Position.status.in_([s.value for s in NON_TERMINAL]),
                    )
                    .group_by(Position.status)
                ).all()
            )
            for status in sorted(s.value for s in NON_TERMINAL):
                positions.add_metric([self.exchange, status], by_status.get(status, 0))
            for status, count in session.execute(
                select(Alert.status, func.count(Alert.id)).group_by(Alert.status)
            ).all():
                alerts.add_metric([status], count)
            for component, seen in session.execute(
                select(Heartbeat.component, Heartbeat.seen_at).order_by(Heartbeat.component)
            ).all():
                ages.add_metric([component], (now - seen).total_seconds())
            rows = load_open_rows(session, self.exchange)
        yield positions
        yield alerts
        yield ages
        try:
            orders = self.reads.orders()
        except ExchangeFailure:
            orders = None
        if orders is not None:
            unprotected = GaugeMetricFamily(
                "vigil_unprotected_positions", "Active positions without a live stop."
            )
            unprotected.add_metric([], len(find_unprotected(rows, orders)))
            yield unprotected
        events = CounterMetricFamily(
            "vigil_events", "Events written, by type and severity.", labels=["type", "severity"]
        )
        for (type_, severity), count in sorted(self.events.refresh().items()):
            events.add_metric([type_, severity], count)
        yield events
