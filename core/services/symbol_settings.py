"""Per-symbol settings: stored in ``symbol_settings``, read by every decision through a cache.

Why one place: trailing, the opening's stop-loss, leverage and size, protection's stop and
the wave's stoplist all ask ``effective(deps, exchange, symbol)`` for a Settings copy with
the overrides applied, so no decision can read the environment where an operator set a
per-symbol value. Precedence: the symbol's row, then the venue's ``*`` row, then the
environment (core/domain/symbol_settings.py).

Why a cache and an announcement: a price task decides many times a second; reading the table
each time would cost a query per tick. Each process keeps the (small) table in memory and
re-reads it when the version counter ``vigil:symbol_settings:version`` moved, one Redis GET
per decision. A change increments that counter and publishes the venue and symbol on
``vigil:symbol_settings`` (the announcement other processes may subscribe to), so the next
decision anywhere sees it without a restart. With Redis unreachable the cache lives at most
``CACHE_SECONDS``.

Why a change never loosens a live stop: this module only changes what the *next* decision
reads. A stop already on the exchange moves only through trailing's make-before-break move,
which only ever tightens it; a tighter stop-loss applies to the next opening, and to
protection only when it must place a missing stop.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import RedisError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from core.config import Settings
from core.db.models import SymbolSetting
from core.db.session import database_url, unit_of_work
from core.domain.symbol_settings import (
    KEYS,
    VENUE_DEFAULT,
    SymbolSettingError,
    Value,
    enabled,
    merged,
    normalise_symbol,
)
from core.events import EventType, record
from core.exchange import errors
from core.venues import configured_venues

if TYPE_CHECKING:
    from core.services.deps import Deps, UnitOfWork

VERSION_KEY = "vigil:symbol_settings:version"
CHANNEL = "vigil:symbol_settings"
CACHE_SECONDS = 2.0
# the keys that are Settings fields (``enabled`` is not: it decides the wave's stoplist)
SETTINGS_KEYS = tuple(k for k in KEYS if k != "enabled")

Table = dict[tuple[str, str], dict[str, Value]]


def _values(row: SymbolSetting) -> dict[str, Value]:
    found = {key: getattr(row, key) for key in KEYS}
    return {k: v for k, v in found.items() if v is not None}


def _read_table(session: Session) -> Table:
    rows = session.scalars(select(SymbolSetting)).all()
    return {(row.exchange, row.symbol): _values(row) for row in rows}


@dataclass
class _Cache:
    """The table as this process last read it, with the version it was read at."""

    table: Table = field(default_factory=dict)
    version: bytes | None = None
    loaded_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, client: redis.Redis) -> Table:
        try:
            version = getattr(_known, "version", None) or _version(client)
            fresh = version == self.version
        except RedisError:
            version = None
            fresh = time.monotonic() - self.loaded_at < CACHE_SECONDS
        if fresh:
            return self.table
        with self.lock:
            self.table = _read_outside_the_pool()
            self.version, self.loaded_at = version, time.monotonic()
            return self.table


def _read_outside_the_pool() -> Table:
    """Read the table on a connection of its own: decisions ask while they hold a pooled
    connection in their own transaction, and a second one from the same pool could wait
    forever when every thread does the same."""
    engine = create_engine(database_url(), poolclass=NullPool)
    try:
        with Session(engine) as session:
            return _read_table(session)
    finally:
        engine.dispose()


def _version(client: redis.Redis) -> bytes | None:
    """The announced version; a Redis that lost it (flushed, replaced) gets a random one, so
    every cache re-reads rather than trusting a copy from before the loss."""
    found: bytes | None = client.get(VERSION_KEY)  # type: ignore[assignment]
    if found is None:
        client.set(VERSION_KEY, secrets.randbits(48), nx=True)
        found = client.get(VERSION_KEY)  # type: ignore[assignment]
    return found


_CACHE = _Cache()
_known = threading.local()


@contextmanager
def version_known(version: bytes | None) -> Iterator[None]:
    """Within the block, this thread's reads take ``version`` as the announced version
    instead of asking Redis (None: ask as usual). For a caller that read it a moment ago
    in a round trip it made anyway (the price run's start, ``core.services.run_start``)."""
    outer = getattr(_known, "version", None)
    _known.version = version
    try:
        yield
    finally:
        _known.version = outer


def clear_cache() -> None:
    """Forget what this process read (tests; a forked child starts from the parent's copy,
    which the version check makes harmless)."""
    global _CACHE
    _CACHE = _Cache()


def overrides(client: redis.Redis, exchange: str, symbol: str) -> dict[str, Value]:
    """The overrides in force for ``symbol`` on ``exchange`` (symbol over venue default)."""
    table = _CACHE.get(client)
    return merged(
        table.get((exchange, VENUE_DEFAULT), {}), table.get((exchange, symbol.upper()), {})
    )


def apply(settings: Settings, found: dict[str, Value]) -> Settings:
    """A copy of ``settings`` with the overrides applied (the environment underneath)."""
    update = {k: v for k, v in found.items() if k in SETTINGS_KEYS}
    return settings.model_copy(update=update) if update else settings


def effective(settings: Settings, client: redis.Redis, exchange: str, symbol: str) -> Settings:
    """The settings a decision about ``symbol`` on ``exchange`` uses now."""
    return apply(settings, overrides(client, exchange, symbol))


def disabled_among(
    settings: Settings, client: redis.Redis, exchange: str, symbols: Iterable[str]
) -> frozenset[str]:
    """Which of ``symbols`` may not open (stoplisted by override or by the environment)."""
    env_stoplist = frozenset(s.upper() for s in settings.stoplist)
    table = _CACHE.get(client)  # one read for the whole wave
    venue_default = table.get((exchange, VENUE_DEFAULT), {})
    return frozenset(
        s
        for s in symbols
        if not enabled(merged(venue_default, table.get((exchange, s.upper()), {})), s, env_stoplist)
    )


# --- changes (the CLI and the API) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What one ``set`` or ``unset`` did."""

    exchange: str
    symbol: str
    old: dict[str, Value]
    new: dict[str, Value]

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "old": _jsonable(self.old),
            "new": _jsonable(self.new),
            "changed": self.changed,
        }


def _jsonable(values: dict[str, Value]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Decimal) else v for k, v in sorted(values.items())}


def _plain(value: Decimal) -> str:
    """``1.000000`` (as the column stores it) and ``1.0`` both read ``1``; never ``1E+2``."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return str(value.normalize())


def set_values(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    values: dict[str, Value],
    by: str,
    uow: UnitOfWork = unit_of_work,
) -> Change:
    """Store ``values`` for (exchange, symbol), record the change, announce it."""
    return _change(client, exchange, symbol, by, lambda old: {**old, **values}, uow)


def unset_values(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    keys: list[str] | None,
    by: str,
    uow: UnitOfWork = unit_of_work,
) -> Change:
    """Remove ``keys`` (None: every key) from (exchange, symbol)."""
    drop = set(KEYS) if keys is None else set(keys)
    return _change(
        client,
        exchange,
        symbol,
        by,
        lambda old: {k: v for k, v in old.items() if k not in drop},
        uow,
    )


def _change(
    client: redis.Redis, exchange: str, symbol: str, by: str, edit: Any, uow: UnitOfWork
) -> Change:
    symbol = normalise_symbol(symbol)
    with uow() as session:
        row = session.scalars(
            select(SymbolSetting)
            .where(SymbolSetting.exchange == exchange, SymbolSetting.symbol == symbol)
            .with_for_update()
        ).one_or_none()
        old = _values(row) if row is not None else {}
        new: dict[str, Value] = edit(old)
        change = Change(exchange, symbol, old, new)
        if not change.changed:
            return change
        if row is None:
            row = SymbolSetting(exchange=exchange, symbol=symbol)
            session.add(row)
        if new:
            row.updated_at = datetime.now(UTC)
            for key in KEYS:
                setattr(row, key, new.get(key))
            row.updated_by = by
        else:
            session.delete(row)  # nothing left overridden: no row
        record(
            session,
            EventType.SYMBOL_SETTINGS_CHANGED,
            exchange=exchange,
            symbol=symbol,
            old=_jsonable(old),
            new=_jsonable(new),
            by=by,
        )
    announce(client, exchange, symbol)
    return change


def announce(client: redis.Redis, exchange: str, symbol: str) -> None:
    """Move the version (every cache re-reads) and publish which symbol changed.

    Best effort: with Redis down, caches expire on their own after ``CACHE_SECONDS``."""
    try:
        pipe = client.pipeline()
        pipe.incr(VERSION_KEY)
        pipe.publish(CHANNEL, f"{exchange}:{symbol}")
        pipe.execute()
    except RedisError:
        pass


def show(exchange: str | None = None, uow: UnitOfWork = unit_of_work) -> list[dict[str, Any]]:
    """Every stored row (of one venue, or all), venue defaults first."""
    with uow() as session:
        table = _read_table(session)
    rows = [
        {"exchange": ex, "symbol": sym, "values": _jsonable(values)}
        for (ex, sym), values in table.items()
        if exchange is None or ex == exchange
    ]
    return sorted(rows, key=lambda r: (r["exchange"], r["symbol"] != VENUE_DEFAULT, r["symbol"]))


def check_venue(settings: Settings, venue: str) -> str:
    """``venue`` if this deployment trades it (VIGIL_EXCHANGES), else SymbolSettingError."""
    venues = configured_venues(settings)
    if venue not in venues:
        raise SymbolSettingError(f"venue {venue!r} is not configured here ({', '.join(venues)})")
    return venue


def check_target(deps: Deps, exchange: str | None, symbol: str) -> tuple[str, str]:
    """The (venue, symbol) a change is about, or SymbolSettingError: the venue must be one of
    this deployment's, the symbol ``*`` or one the venue lists (asked of the venue)."""
    venue = check_venue(deps.settings, exchange or deps.exchange_name)
    symbol = normalise_symbol(symbol)
    if symbol == VENUE_DEFAULT:
        return venue, symbol
    from core.services.deps import deps_for

    adapter = deps.exchange if venue == deps.exchange_name else deps_for(venue).exchange
    try:
        adapter.unified(symbol)
    except errors.SymbolUnavailable:
        raise SymbolSettingError(f"{symbol} is not listed on {venue}") from None
    except errors.ExchangeFailure as exc:
        raise SymbolSettingError(f"cannot check {symbol} on {venue}: {exc}") from None
    return venue, symbol
