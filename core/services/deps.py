"""What a use case needs from the outside world, built once per process.

Built lazily (never at import) so a Celery pre-fork pool builds its own in each child: a
ccxt session or Redis connection shared across a fork is shared sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Protocol

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings, get_settings
from core.db.session import new_session, unit_of_work
from core.endpoints import exchange_client_options, resolve_redis_url
from core.events import EventType, Severity, record
from core.exchange.adapter import ExchangeAdapter
from core.exchange.dialect import DialectOptions
from core.exchange.factory import build_exchange
from core.locks import fence_token
from core.venues import configured_venues, default_venue, venue_config

EXCHANGE_NAMES = {"paper": "binance", "binanceusdm": "binance", "bybit": "bybit"}


def exchange_name(settings: Settings) -> str:
    """How the engine names the venue in the database: the paper exchange is the venue
    whose dialect it speaks (VIGIL_PAPER_DIALECT)."""
    if settings.exchange == "paper":
        return settings.paper_dialect
    return EXCHANGE_NAMES[settings.exchange]


UnitOfWork = Callable[[], AbstractContextManager[Session]]


def record_alone_through(uow: UnitOfWork, event_type: EventType, **kwargs: Any) -> None:
    """One event in a transaction of its own, through ``uow``: for a service that is handed a
    unit of work rather than a whole Deps (``Deps.record_alone`` is this with its own)."""
    with uow() as session:
        record(session, event_type, **kwargs)


class SendStep(Protocol):
    """Told when a run's order for this price is out, or that none will be sent now; set by
    a price batch (``core.services.send_gate``) so its runs' POSTs go before their
    follow-ups. None outside a batch: nothing waits."""

    def sent(self) -> None: ...

    def skipped(self) -> None: ...


@dataclass
class Deps:
    settings: Settings
    exchange: ExchangeAdapter
    redis: redis.Redis
    clock: Clock
    # Where the services get their transactions: given here, not imported, so a unit test
    # can hand a service a fake (or a counting wrapper) as it hands it a fake venue.
    uow: UnitOfWork = unit_of_work
    # a price batch's gate for this run (see SendStep); None: a run alone, nothing waits
    send_step: SendStep | None = None

    @property
    def exchange_name(self) -> str:
        return self.exchange.name

    def unit_of_work(self) -> AbstractContextManager[Session]:
        """A transaction: committed when the block ends normally, rolled back on an error."""
        return self.uow()

    def record_alone(self, event_type: EventType, **kwargs: Any) -> None:
        """One event in a transaction of its own (``core.events.record_alone``, through
        this Deps' unit of work)."""
        record_alone_through(self.uow, event_type, **kwargs)

    def record_failure_warning(
        self, event_type: EventType, exc: BaseException, **about: Any
    ) -> None:
        """A step on this venue failed and is left to a later run: a warning in a
        transaction of its own, naming the venue and the error; ``about`` says which step."""
        self.record_alone(
            event_type,
            severity=Severity.WARNING,
            exchange=self.exchange_name,
            error=str(exc),
            **about,
        )

    def fence_token(self) -> int:
        return fence_token()


def build_adapter(settings: Settings) -> ExchangeAdapter:
    client = build_exchange(settings.exchange, **exchange_client_options(settings))
    options = DialectOptions(visibility_timeout=settings.exchange_visibility_timeout)
    return ExchangeAdapter(client, exchange_name(settings), options=options)


@lru_cache(maxsize=1)
def get_deps() -> Deps:
    """The default venue's Deps (the venue of the single-venue settings; see core/venues.py)."""
    settings = get_settings()
    return Deps(
        settings=settings,
        exchange=build_adapter(venue_settings(settings, default_venue(settings))),
        redis=redis.Redis.from_url(resolve_redis_url(settings)),
        clock=SYSTEM_CLOCK,
    )


class VenueNotConfigured(LookupError):
    """Work for a venue this deployment does not trade (VIGIL_EXCHANGES)."""


def venue_settings(settings: Settings, venue: str) -> Settings:
    """``settings`` with the connection fields of ``venue`` (its own key, URL, dialect)."""
    config = venue_config(settings, venue)
    return settings.model_copy(
        update={
            "exchange": config.kind,
            "exchange_url": config.url,
            "api_key": config.api_key,
            "api_secret": config.api_secret,
            "testnet": config.testnet,
            "paper_dialect": config.paper_dialect,
        }
    )


def deps_for(venue: str) -> Deps:
    """The Deps of one venue, built once per process on first use (one adapter per venue);
    the default venue's is ``get_deps()``. The venue comes with the work: a task's argument,
    the position's or the wave's row."""
    base = get_deps()
    if venue == base.exchange_name:
        return base
    if venue not in configured_venues(base.settings):
        raise VenueNotConfigured(f"venue {venue!r} is not configured (VIGIL_EXCHANGES)")
    return _other_venue(venue)


@cache
def _other_venue(venue: str) -> Deps:
    base = get_deps()
    settings = venue_settings(base.settings, venue)
    return Deps(settings, build_adapter(settings), base.redis, base.clock, base.uow)


def every_venue() -> list[Deps]:
    """One Deps per configured venue: what a guardian or sweep loops over."""
    return [deps_for(venue) for venue in configured_venues(get_settings())]


def reset_deps() -> None:
    get_deps.cache_clear()
    _other_venue.cache_clear()


def venue_of_position(position_id: int) -> str | None:
    """The venue a position is on; None if there is no such position."""
    from core.db.models import Position

    with new_session() as session:
        return session.scalar(select(Position.exchange).where(Position.id == position_id))


def venue_of_wave(wave_id: int) -> str | None:
    """The venue a wave is for; None if there is no such wave."""
    from core.db.models import Wave

    with new_session() as session:
        return session.scalar(select(Wave.exchange).where(Wave.id == wave_id))


def deps_for_position(position_id: int) -> Deps:
    """The Deps of the venue a position is on (the default venue's if there is no such
    position: the service then says so)."""
    exchange = venue_of_position(position_id)
    return get_deps() if exchange is None else deps_for(exchange)


def deps_for_wave(wave_id: int) -> Deps:
    """The Deps of the venue a wave is for (the default venue's if there is no such wave)."""
    exchange = venue_of_wave(wave_id)
    return get_deps() if exchange is None else deps_for(exchange)
