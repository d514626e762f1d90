"""Paging when the engine goes blind: the watchdog, and the guardians' exchange-read count.

**Where each check runs, so that a dead part cannot hide its own death.** The watchdog runs
in the API process and in the beat process (``vigil beat`` starts it beside Celery beat),
never on a worker: a dead beat is noticed by the API (beat's heartbeat is written by a
worker running beat's heartbeat task, so it also goes stale when no worker runs), dead
workers by the API and by beat (broker ping), the price feed by whichever is alive (its
health component), the whole stack by the dead-man's switch (core/services/deadman.py).
Each watchdog also delivers the outbox itself, since the beat-scheduled delivery task needs
the very beat and workers whose absence it reports. Two watchdogs paging the same thing
fold into one alert (the outbox's kind+venue+component dedup).

**The database down.** The outbox lives in the database, so an alert about the database
is sent straight to the channels (at most once per dedup window across processes while
Redis answers) and written to the event log, as already sent, once the database is back.

**Exchange reads.** A guardian (protection, reconciliation, zombies) whose snapshot read
fails counts one more consecutive failure per venue in Redis; the ``N``-th pages
(``exchange_reads_failing``, critical), a successful read resets the count and reports the
recovery. A refused key (Binance -2015, Bybit 10003: revoked, expired, IP not allowed) does
not heal by itself, so it pages at the first failed cycle.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.clock import Clock
from core.config import Settings
from core.db.models import Alert
from core.db.session import unit_of_work
from core.domain.paging import (
    Condition,
    Decision,
    Page,
    PagingParams,
    Tracked,
    decide,
    read_failures_page,
)
from core.events import EventType, Severity, record
from core.exchange.errors import AuthenticationFailed, ExchangeFailure
from core.logging import redact
from core.services.alerts import Channel, DeliveryError, channels_from, deliver_pending
from core.services.deps import Deps, UnitOfWork
from core.services.health import ExchangeReads, HealthChecker, HealthReport, first_line

log = logging.getLogger(__name__)

PAGED_ELSEWHERE = frozenset({"exchange"})  # counted over guardian cycles, see module doc
WATCHDOG_READ_TTL = 60.0  # the watchdog reads the exchange at most once a minute


def paging_params(settings: Settings) -> PagingParams:
    return PagingParams(
        confirm=timedelta(seconds=settings.page_confirm_seconds),
        repeat=timedelta(seconds=settings.page_repeat_seconds),
        paged_elsewhere=PAGED_ELSEWHERE,
    )


def watchdog_checker(health: HealthChecker) -> HealthChecker:
    """A sibling of ``health`` that reads the exchange at most once a minute.

    /health may be polled every few seconds; the watchdog must not add its own exchange
    reads to the venue's rate limit at that pace.
    """
    sibling = copy.copy(health)
    sibling.reads = ExchangeReads(health.deps_factory, max(WATCHDOG_READ_TTL, health.reads.ttl))
    return sibling


@dataclass
class DirectPage:
    """A page sent while the database was down, to be written once it is back."""

    page: Page
    sent_at: datetime
    delivered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Watchdog:
    """Health evaluated on a cadence; failing parts page (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        health: HealthChecker,
        *,
        host: str,
        redis_client: redis.Redis | None = None,
        channels: list[Channel] | None = None,
        uow: UnitOfWork = unit_of_work,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.health = health
        self.host = host
        self.redis = redis_client if redis_client is not None else health.redis
        self.uow = uow  # where the pages and recoveries are written
        self.channels = channels
        self.params = paging_params(settings)
        self.tracked: dict[str, Tracked] = {}
        self.unrecorded: list[DirectPage] = []
        self.last: Decision | None = None

    @property
    def exchange(self) -> str:
        return self.health.exchange_name or self.settings.exchange

    async def cycle(self) -> Decision:
        report = await self.health.check()
        return await asyncio.to_thread(self.act, report)

    def act(self, report: HealthReport) -> Decision:
        """Page what is due for ``report``; record recoveries; deliver the outbox."""
        now = self.clock.now()
        conditions = [Condition(name, c.failed, c.detail) for name, c in report.components.items()]
        decision = decide(conditions, self.tracked, now, self.params)
        self.tracked = dict(decision.tracked)
        self.last = decision
        database = report.components.get("database")
        if database is not None and database.failed:
            for page in decision.pages:
                self._send_direct(page, now)
            self._resend_direct()
            return decision
        try:
            self._record(decision, now)
            deliver_pending(self.settings, self.clock, channels=self.channels, uow=self.uow)
        except SQLAlchemyError as exc:
            log.error("watchdog could not write its pages: %s", first_line(exc))
            for page in decision.pages:
                self._send_direct(page, now)
        return decision

    # --- through the outbox ----------------------------------------------------------------

    def _record(self, decision: Decision, now: datetime) -> None:
        with self.uow() as session:
            for direct in self.unrecorded:
                self._record_direct(session, direct)
            for page in decision.pages:
                self._record_page(session, page, now)
            for name in decision.recovered:
                record(
                    session,
                    EventType.COMPONENT_RECOVERED,
                    exchange=self.exchange,
                    component=name,
                    noticed_by=self.host,
                )
                log.warning("%s recovered (noticed by %s)", name, self.host)
        self.unrecorded.clear()

    def _record_page(self, session: Session, page: Page, now: datetime) -> None:
        record(
            session,
            EventType.COMPONENT_DOWN,
            exchange=self.exchange,
            **self._page_data(page, now),
        )
        log.critical("%s is down since %s (noticed by %s)", page.name, page.since, self.host)

    def _page_data(self, page: Page, now: datetime) -> dict[str, Any]:
        return {
            "component": page.name,
            "failing_since": page.since,
            "failing_seconds": round((now - page.since).total_seconds(), 1),
            "repeat": page.repeat,
            "noticed_by": self.host,
            "detail": dict(page.detail),
        }

    # --- straight to the channels (the database is down) -----------------------------------

    def _claim_direct(self, page: Page) -> bool:
        """One process sends a direct page per dedup window while Redis answers."""
        key = f"vigil:page:direct:{self.exchange}:{page.name}"
        ttl = max(1, int(self.settings.alert_dedup_seconds))
        try:
            return bool(self.redis.set(key, self.host, nx=True, ex=ttl))
        except RedisError:
            return True  # cannot coordinate: a second page beats none

    def _send_direct(self, page: Page, now: datetime) -> None:
        if not self._claim_direct(page):
            return
        direct = DirectPage(page, now)
        self.unrecorded.append(direct)
        self._deliver_direct(direct)

    def _resend_direct(self) -> None:
        for direct in self.unrecorded:
            if direct.errors:
                self._deliver_direct(direct)

    def _deliver_direct(self, direct: DirectPage) -> None:
        channels = channels_from(self.settings) if self.channels is None else self.channels
        data = self._page_data(direct.page, direct.sent_at)
        message = f"{EventType.COMPONENT_DOWN.value} on {self.exchange} ({direct.page.name})"
        payload = {
            "kind": EventType.COMPONENT_DOWN.value,
            "severity": Severity.CRITICAL.value,
            "message": message,
            "created_at": direct.sent_at.isoformat(),
            "exchange": self.exchange,
            "sent_directly": True,
            "data": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()},
        }
        text = f"[CRITICAL] {message}\nsent directly: the database cannot be written"
        direct.errors = []
        for channel in channels:
            if channel.name in direct.delivered:
                continue
            try:
                channel.send(payload, text)
                direct.delivered.append(channel.name)
            except DeliveryError as exc:
                direct.errors.append(f"{channel.name}: {redact(str(exc))}")
        log.critical(
            "%s down, sent directly to %s%s",
            direct.page.name,
            ", ".join(direct.delivered) or "no channel",
            f" (failed: {'; '.join(direct.errors)})" if direct.errors else "",
        )

    def _record_direct(self, session: Session, direct: DirectPage) -> None:
        event = record(
            session,
            EventType.COMPONENT_DOWN,
            exchange=self.exchange,
            sent_directly=True,
            channels=direct.delivered,
            **self._page_data(direct.page, direct.sent_at),
        )
        session.flush()
        alert = session.scalars(select(Alert).where(Alert.event_id == event.id)).one_or_none()
        if alert is not None and direct.delivered and not direct.errors:
            alert.status, alert.sent_at = "sent", direct.sent_at
            alert.delivered, alert.attempts = list(direct.delivered), 1


# --- guardians' exchange reads -------------------------------------------------------------


def _reads_key(exchange: str) -> str:
    return f"vigil:paging:read_failures:{exchange}"


def note_read_failure(deps: Deps, session: Session, guardian: str, exc: ExchangeFailure) -> None:
    """Count one more consecutive failed guardian read; page at the configured count."""
    try:
        key = _reads_key(deps.exchange_name)
        consecutive = int(deps.redis.incr(key))
        deps.redis.expire(key, 86_400)
    except RedisError as error:
        log.warning("failed exchange reads not counted: %s", first_line(error))
        return
    # a refused key does not heal by itself: it pages at the first failed cycle
    threshold = 1 if isinstance(exc, AuthenticationFailed) else None
    threshold = threshold or deps.settings.exchange_read_failure_cycles
    if read_failures_page(consecutive, threshold):
        with suppress(RedisError):
            deps.redis.set(f"{key}:paged", 1, ex=86_400)
        record(
            session,
            EventType.EXCHANGE_READS_FAILING,
            exchange=deps.exchange_name,
            guardian=guardian,
            consecutive_failures=consecutive,
            error_type=type(exc).__name__,
            error=first_line(exc),
        )


def note_read_success(deps: Deps) -> None:
    """Reset the count; report the recovery if the failures had paged."""
    try:
        key = _reads_key(deps.exchange_name)
        pipe = deps.redis.pipeline()
        pipe.get(key)
        pipe.get(f"{key}:paged")
        pipe.delete(key, f"{key}:paged")
        before, paged, _ = pipe.execute()
    except RedisError:
        return
    if before is None or paged is None:
        return
    deps.record_alone(
        EventType.EXCHANGE_READS_RECOVERED,
        exchange=deps.exchange_name,
        consecutive_failures=int(before),
    )
