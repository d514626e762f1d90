"""``/health``: is every part of the system alive, and is every position protected?

Each component answers ``ok``, ``fail`` or ``not_configured`` with details; the endpoint is
200 only when none fails, 503 otherwise (an orchestrator restarts or pages on it). A
position without a live stop fails the health of the whole system: that is the one state a
trading engine must never sit in quietly.

The exchange is read once per ``health_cache_seconds`` (all open orders, two calls) and the
read is shared with ``/metrics``, so a tight poller cannot eat the venue's rate limit.
Components are checked concurrently, each under ``health_check_timeout``.

``halted`` (with ``halts``, who/when/why) says whether new openings are stopped
(core/services/halts.py). A halt is a decision, not a fault: it never makes the answer 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import RedisError
from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from core.clock import Clock
from core.config import Settings
from core.db.models import Heartbeat, Position
from core.db.session import unit_of_work
from core.domain.orders import ExchangeOrder
from core.domain.positions import INTERMEDIATE, PositionStatus
from core.events import EventType
from core.exchange.errors import ExchangeFailure
from core.logging import redact
from core.queues import QUEUES, venue_queues
from core.services import halts
from core.services.deps import Deps, UnitOfWork, record_alone_through
from core.services.invariants import find_unprotected, load_open_rows
from core.services.queue_health import queues_detail
from core.services.throttled_read import ThrottledRead

log = logging.getLogger(__name__)

OK, FAIL, NOT_CONFIGURED = "ok", "fail", "not_configured"

WorkerPing = Callable[[float], list[str]]


@dataclass(frozen=True)
class Component:
    status: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    components: dict[str, Component]
    # halts in force (core/services/halts.py): shown, never a failure; None if unreadable
    halts: list[dict[str, Any]] | None = None

    @property
    def healthy(self) -> bool:
        return not any(c.failed for c in self.components.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": OK if self.healthy else FAIL,
            "checked_at": self.checked_at.isoformat(),
            "halted": None if self.halts is None else bool(self.halts),
            "halts": self.halts,
            "components": {
                name: {"status": c.status, **c.detail} for name, c in self.components.items()
            },
        }


class ExchangeReads:
    """All open orders, read at most once per ``ttl`` seconds, shared by health and metrics."""

    def __init__(self, deps_factory: Callable[[], Deps], ttl: float) -> None:
        self.deps_factory = deps_factory
        self._read: ThrottledRead[list[ExchangeOrder]] = ThrottledRead(self._open_orders, ttl, [])

    @property
    def ttl(self) -> float:
        return self._read.ttl

    def _open_orders(self) -> list[ExchangeOrder]:
        return [o.to_domain() for o in self.deps_factory().exchange.open_orders()]

    def orders(self) -> list[ExchangeOrder]:
        """Raises the ExchangeFailure of the last read if it failed."""
        return self.orders_read_at()[0]

    def orders_read_at(self) -> tuple[list[ExchangeOrder], float]:
        """The orders and the wall-clock time (epoch s) they were read: a position that
        became active after that read cannot be judged by them (the console's book)."""
        reading = self._read.latest()
        if reading.error is not None:
            raise reading.error
        return reading.value, reading.read_at


class HealthChecker:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        deps_factory: Callable[[], Deps],
        redis_client: redis.Redis,
        exchange_reads: ExchangeReads,
        worker_ping: WorkerPing | None = None,
        exchange_name: str | None = None,
        uow: UnitOfWork = unit_of_work,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.deps_factory = deps_factory
        self.redis = redis_client
        self.reads = exchange_reads
        self.worker_ping = worker_ping
        self.exchange_name = exchange_name
        self.uow = uow  # every database read of a check, and the health change it records

    async def check(self) -> HealthReport:
        checks: dict[str, Callable[[], Component]] = {
            "database": self.database,
            "redis": self.redis_alive,
            "exchange": self.exchange,
            "beat": self.beat,
            "ingest": self.ingest,
            "price_feed": self.price_feed,
            "processes": self.processes,
            "workers": self.workers,
            "queues": self.queues,
            "unprotected_positions": self.unprotected,
            "interrupted_openings": self.interrupted,
        }
        from core.services.venue_health import other_venue_checks  # imports this module

        checks.update(other_venue_checks(self))  # VIGIL_EXCHANGES: each other venue's own
        results = await asyncio.gather(*(self._run(name, fn) for name, fn in checks.items()))
        report = HealthReport(
            self.clock.now(),
            dict(zip(checks, results, strict=True)),
            await asyncio.to_thread(self._halts),
        )
        await asyncio.to_thread(self._record_change, report)
        return report

    def _halts(self) -> list[dict[str, Any]] | None:
        """The halts in force; None when the database cannot say (its component fails)."""
        try:
            return [h.as_dict() for h in halts.current(self.uow)]
        except SQLAlchemyError:
            return None

    def _record_change(self, report: HealthReport) -> None:
        """One ``health_check_failed`` event when the set of failing components changes.

        /health is polled every few seconds; an event per failing probe would bury the log,
        so the last failing set is kept in Redis and only a new one is written. Best effort:
        with the database or Redis down (often the very failure) nothing can be written, and
        the next probe tries again.
        """
        failing = sorted(name for name, c in report.components.items() if c.failed)
        key = f"vigil:health:failing:{self.exchange_name or self.settings.exchange}"
        try:
            before = self.redis.get(key)
            now = ",".join(failing).encode()
            if not failing:
                if before is not None:
                    self.redis.delete(key)
                return
            if before == now:
                return
            record_alone_through(
                self.uow,
                EventType.HEALTH_CHECK_FAILED,
                exchange=self.exchange_name,
                failing=failing,
                components={n: report.as_dict()["components"][n] for n in failing},
            )
            self.redis.set(key, now)
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("health change not recorded: %s", first_line(exc))

    async def _run(self, name: str, fn: Callable[[], Component]) -> Component:
        timeout = self.settings.health_check_timeout
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn), timeout)
        except TimeoutError:
            return Component(FAIL, {"error": f"no answer within {timeout}s"})

    # --- components (each runs in a thread) --------------------------------------------------

    def database(self) -> Component:
        try:
            with self.uow() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        return Component(OK)

    def redis_alive(self) -> Component:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        return Component(OK)

    def exchange(self) -> Component:
        return exchange_component(self.reads)

    def _heartbeats(self) -> dict[str, datetime]:
        with self.uow() as session:
            return dict(session.execute(select(Heartbeat.component, Heartbeat.seen_at)).all())

    def beat(self) -> Component:
        try:
            seen = self._heartbeats().get("beat")
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        return self._fresh(seen, self.settings.health_beat_stale_seconds)

    def ingest(self) -> Component:
        try:
            seen = {k: v for k, v in self._heartbeats().items() if k.startswith("ingest")}
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        if not seen:
            if self.settings.signal_url is None:
                return Component(NOT_CONFIGURED, {"detail": "VIGIL_SIGNAL_URL is not set"})
            return Component(FAIL, {"error": "no ingest heartbeat ever recorded"})
        oldest_name = min(seen, key=lambda k: seen[k])
        component = self._fresh(seen[oldest_name], self.settings.health_ingest_stale_seconds)
        return Component(component.status, {**component.detail, "processes": sorted(seen)})

    def _fresh(self, seen: datetime | None, stale_after: float) -> Component:
        if seen is None:
            return Component(FAIL, {"error": "no heartbeat recorded"})
        age = (self.clock.now() - seen).total_seconds()
        detail = {"age_seconds": round(age, 1), "stale_after_seconds": stale_after}
        return Component(OK if age <= stale_after else FAIL, detail)

    def price_feed(self) -> Component:
        """Fails when open positions exist and no mark price arrived for the stale bound.

        The ingest's heartbeat row carries ``last_tick_at``; a price stream that went quiet
        (dead loop, lost socket, silent exchange) leaves the stops without their trailing.
        """
        stale_after = self.settings.price_feed_stale_seconds
        try:
            open_count, ticks = self._open_positions_and_ticks()
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        if ticks is None:
            return Component(NOT_CONFIGURED, {"detail": "no ingest heartbeat recorded"})
        detail: dict[str, Any] = {"open_positions": open_count, "stale_after_seconds": stale_after}
        if ticks:
            age = (self.clock.now() - max(ticks)).total_seconds()
            detail["last_tick_age_seconds"] = round(age, 1)
        if open_count == 0:
            return Component(OK, detail)
        if not ticks:
            return Component(FAIL, {**detail, "error": "no mark price received"})
        if detail["last_tick_age_seconds"] > stale_after:
            return Component(FAIL, {**detail, "error": "the price stream went quiet"})
        return Component(OK, detail)

    def _open_positions_and_ticks(self) -> tuple[int, list[datetime] | None]:
        """Open positions, and the ingests' last ticks (None: no ingest ever beat)."""
        live = [s.value for s in INTERMEDIATE] + [PositionStatus.ACTIVE.value]
        row_name = f"ingest:{self.exchange_name}" if self.exchange_name else None
        with self.uow() as session:
            open_query = select(func.count(Position.id)).where(Position.status.in_(live))
            if self.exchange_name:
                open_query = open_query.where(Position.exchange == self.exchange_name)
            open_count = int(session.scalar(open_query) or 0)
            rows = session.execute(
                select(Heartbeat.component, Heartbeat.info).where(
                    Heartbeat.component.like("ingest%")
                )
            ).all()
        if not rows:
            return open_count, None
        ticks = []
        for name, info in rows:
            raw = (info or {}).get("last_tick_at")
            if raw and (row_name is None or name == row_name):
                ticks.append(datetime.fromisoformat(raw))
        return open_count, ticks

    def processes(self) -> Component:
        """Fails naming each process ``vigil up`` gave up restarting (a crash loop)."""
        try:
            with self.uow() as session:
                row = session.get(Heartbeat, "supervisor")
                info = dict(row.info or {}) if row is not None else None
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        if info is None:
            return Component(NOT_CONFIGURED, {"detail": "not run by `vigil up`"})
        detail = {"restarts": info.get("restarts", {})}
        given_up = info.get("given_up") or []
        if given_up:
            return Component(FAIL, {**detail, "crash_loop": given_up, "error": "not restarted"})
        return Component(OK, detail)

    def workers(self) -> Component:
        """A worker answered the broadcast ping, or one ran beat's heartbeat task lately.

        The heartbeat fallback keeps the check truthful after a Redis restart: Celery's
        broadcast (pidbox) replies can stay lost while tasks run normally, and a false alarm
        hides real ones. Both are read on every check; nothing is remembered.
        """
        if self.worker_ping is None:
            return Component(NOT_CONFIGURED, {"detail": "no broker ping wired in"})
        try:
            names = self.worker_ping(min(2.0, self.settings.health_check_timeout / 2))
        except Exception as exc:  # noqa: BLE001 - a broker down raises many kinds
            log.debug("worker ping failed: %s", exc)
            names = []
        if names:
            return Component(OK, {"count": len(names), "workers": sorted(names)})
        fresh = self._fresh_workers()
        if fresh:
            return Component(OK, {"count": len(fresh), "workers": fresh, "via": "heartbeat"})
        return Component(FAIL, {"error": "no worker answered a ping", "count": 0})

    def queues(self) -> Component:
        """Every queue consumed: none has a message waiting longer than the bound, and no
        message a worker received sits with a worker whose main loop stopped (an alive
        worker that takes no task stays invisible to ``workers``; core/services/queue_health)."""
        own = [q for venue in self.settings.venue_queues for q in venue_queues(venue)]
        healthy, detail = queues_detail(
            self.redis,
            self.clock,
            [*QUEUES, *own],
            self.settings.health_queue_stale_seconds,
            self.settings.health_holder_stall_seconds,
        )
        return Component(OK if healthy else FAIL, detail)

    def _fresh_workers(self) -> list[str]:
        """Workers whose heartbeat (written by a task they ran) is within beat's bound."""
        try:
            seen = self._heartbeats()
        except SQLAlchemyError:
            return []
        bound = self.settings.health_beat_stale_seconds
        now = self.clock.now()
        return sorted(
            name
            for name, at in seen.items()
            if name.startswith("worker:") and (now - at).total_seconds() <= bound
        )

    def unprotected(self) -> Component:
        return unprotected_positions(
            self.exchange_name or self.deps_factory().exchange_name, self.reads, self.uow
        )

    def interrupted(self) -> Component:
        try:
            with self.uow() as session:
                oldest, count = session.execute(
                    select(func.min(Position.updated_at), func.count(Position.id)).where(
                        or_(
                            Position.status.in_([s.value for s in INTERMEDIATE]),
                            (Position.status == PositionStatus.CLOSING)
                            & (Position.close_reason == "rollback"),
                        )
                    )
                ).one()
        except SQLAlchemyError as exc:
            return Component(FAIL, {"error": first_line(exc)})
        if oldest is None:
            return Component(OK, {"count": 0})
        age = (self.clock.now() - oldest).total_seconds()
        limit = self.settings.health_interrupted_max_seconds
        detail = {"count": int(count), "oldest_age_seconds": round(age, 1), "fail_after": limit}
        return Component(OK if age <= limit else FAIL, detail)


def first_line(exc: BaseException) -> str:
    """An error as one redacted line of at most 300 characters: what a health component or a
    page shows (a driver's error runs to many lines, and may carry a URL with a password)."""
    lines = str(exc).strip().splitlines()
    return redact(lines[0][:300]) if lines else type(exc).__name__


def exchange_component(reads: ExchangeReads) -> Component:
    """The ``exchange`` component of one venue: its open orders can be read (cached in
    ``reads``), and how many there are."""
    try:
        orders = reads.orders()
    except ExchangeFailure as exc:
        return Component(FAIL, {"error": f"{type(exc).__name__}: {first_line(exc)}"})
    return Component(OK, {"open_orders": len(orders)})


def unprotected_positions(
    venue: str, reads: ExchangeReads, uow: UnitOfWork = unit_of_work
) -> Component:
    """The ``unprotected_positions`` component of one venue: its open positions checked
    against its open orders (cached in ``reads``); cannot tell is a failure."""
    try:
        with uow() as session:
            rows = load_open_rows(session, venue)
        orders = reads.orders()
    except (SQLAlchemyError, ExchangeFailure) as exc:
        return Component(FAIL, {"error": f"cannot tell: {first_line(exc)}"})
    found = find_unprotected(rows, orders)
    detail: dict[str, Any] = {"count": len(found)}
    if found:
        detail["positions"] = [
            {"position_id": v.position_id, "symbol": v.symbol, "detail": v.detail} for v in found
        ]
    return Component(FAIL if found else OK, detail)
