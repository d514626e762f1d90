"""What the console shows, read from the database and one shared, cached read of the exchange.

Why cached: the page polls every two seconds and several pages may be open; the exchange is
read at most once per ``health_cache_seconds`` (the open orders are the very read /health
and /metrics share; mark prices get the same treatment here), the database once per poll
with a few indexed queries. All functions here block: the routes run them in a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.db.models import (
    AgedPosition,
    Alert,
    Event,
    Order,
    Position,
    Signal,
    TrailingStop,
    Wave,
)
from core.domain import book
from core.domain.orders import ExchangeOrder
from core.domain.positions import NON_TERMINAL, PositionFacts
from core.exchange.client_ids import parse_client_id
from core.exchange.errors import ExchangeFailure
from core.services.deps import Deps
from core.services.health import ExchangeReads
from core.services.invariants import POSITION_FACT_COLUMNS
from core.services.throttled_read import ThrottledRead

log = logging.getLogger(__name__)


class MarketView:
    """Mark prices (cached like the open orders) and each symbol's display precision."""

    def __init__(self, deps_factory: Callable[[], Deps], ttl: float) -> None:
        self.deps_factory = deps_factory
        self._marks: ThrottledRead[dict[str, Decimal]] = ThrottledRead(self._read_marks, ttl, {})
        self._lock = threading.Lock()
        self._places: dict[str, tuple[int | None, int | None]] = {}

    def warm(self) -> None:
        try:
            self.deps_factory().exchange.load_markets()
        except Exception:  # noqa: BLE001 - warming is best effort; the page reads again
            log.warning("console: markets not loaded at start", exc_info=True)
        self.marks()

    def marks(self) -> dict[str, Decimal]:
        """Last good marks; an exchange failure keeps the previous ones (shown with their age)."""
        return self._marks.latest().value

    def _read_marks(self) -> dict[str, Decimal]:
        try:
            return self.deps_factory().exchange.mark_prices()
        except ExchangeFailure as exc:
            log.warning("console: mark prices unavailable: %s", exc)
            raise

    def places(self, symbol: str) -> tuple[int | None, int | None]:
        """(price places, quantity places) from the market's tick and step sizes."""
        with self._lock:
            if symbol not in self._places:
                try:
                    rules = self.deps_factory().exchange.rules(symbol)
                    found = (book.decimals_of(rules.tick_size), book.decimals_of(rules.step_size))
                except Exception:  # noqa: BLE001 - an unknown market is shown without precision
                    found = (None, None)
                self._places[symbol] = found
            return self._places[symbol]


@dataclass(frozen=True)
class BookRow(PositionFacts):
    entry: Decimal | None
    mark: Decimal | None
    pnl: Decimal | None
    stop: Decimal | None
    stop_distance: Decimal | None
    stop_owner: str | None
    stop_client_id: str | None
    live_known: bool  # the exchange's orders were read for this position's venue
    trailing_state: str | None
    trailing_extreme: Decimal | None
    callback: Decimal
    aged_phase: str | None
    aged_target: Decimal | None
    age_seconds: float
    unprotected_seconds: float | None
    correlation_id: str
    price_places: int | None
    qty_places: int | None

    @property
    def line(self) -> book.BookLine:
        notional = self.quantity * (self.mark or self.entry or book.ZERO)
        # with the exchange read, what counts is whether the read judged it uncovered (a
        # position newer than the read is not judged); without it, the ledger's stop
        has_stop = not self.uncovered if self.live_known else self.stop is not None
        return book.BookLine(self.status, notional, self.pnl, has_stop)

    @property
    def uncovered(self) -> bool:
        return self.unprotected_seconds is not None


@dataclass
class BookView:
    rows: list[BookRow]
    totals: book.BookTotals
    exchanges: list[str]
    exchange_error: str | None
    checked_at: datetime


@dataclass
class UnprotectedClock:
    """First sight of a missing stop, for positions protection has not marked yet."""

    first_seen: dict[int, datetime] = field(default_factory=dict)

    def observe(self, missing: set[int], now: datetime) -> dict[int, datetime]:
        for pid in list(self.first_seen):
            if pid not in missing:
                del self.first_seen[pid]
        for pid in missing:
            self.first_seen.setdefault(pid, now)
        return dict(self.first_seen)


@dataclass(frozen=True)
class OpenRow(PositionFacts):
    """The columns the book needs of a position and its trailing and aged rows."""

    entry_price: Decimal | None
    stop_price: Decimal | None
    correlation_id: str
    opened_at: datetime | None
    created_at: datetime
    unprotected_since: datetime | None
    trailing_state: str | None
    trailing_owner: str | None
    highest_price: Decimal | None
    lowest_price: Decimal | None
    aged_phase: str | None
    aged_target: Decimal | None


_OPEN_COLUMNS = (
    *POSITION_FACT_COLUMNS,
    Position.entry_price,
    Position.stop_price,
    Position.correlation_id,
    Position.opened_at,
    Position.created_at,
    Position.unprotected_since,
    TrailingStop.state,
    TrailingStop.owner,
    TrailingStop.highest_price,
    TrailingStop.lowest_price,
    AgedPosition.phase,
    AgedPosition.target_price,
)


def _open_rows(session: Session) -> list[OpenRow]:
    """Plain columns, not ORM objects: the book is read every two seconds, 500 rows at once."""
    stmt = (
        select(*_OPEN_COLUMNS)
        .outerjoin(TrailingStop, TrailingStop.position_id == Position.id)
        .outerjoin(AgedPosition, AgedPosition.position_id == Position.id)
        .where(Position.status.in_([s.value for s in NON_TERMINAL]))
        .order_by(Position.id)
    )
    return [OpenRow(*tuple(row)) for row in session.execute(stmt)]


@dataclass(frozen=True)
class VenueReads:
    """One venue's cached reads: its open orders and its marks and precisions."""

    orders: ExchangeReads
    market: MarketView


@dataclass(frozen=True)
class BookSources:
    """The console's read of the outside world, built once per app: the default venue's
    reads, and those of every other venue of the deployment (``others``)."""

    exchange_name: str
    orders: ExchangeReads
    market: MarketView
    clock: UnprotectedClock
    callback_percent: Decimal
    others: dict[str, VenueReads] = field(default_factory=dict)

    def venues(self) -> dict[str, VenueReads]:
        return {self.exchange_name: VenueReads(self.orders, self.market), **self.others}

    def market_of(self, venue: str) -> MarketView | None:
        if venue == self.exchange_name:
            return self.market
        other = self.others.get(venue)
        return other.market if other is not None else None


@dataclass(frozen=True)
class OrdersRead:
    orders: list[ExchangeOrder] | None
    read_at: datetime | None
    error: str | None


def _orders_or_error(reads: ExchangeReads) -> OrdersRead:
    try:
        orders, at = reads.orders_read_at()
    except ExchangeFailure as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return OrdersRead(None, None, f"{type(exc).__name__}: {first}")
    return OrdersRead(orders, datetime.fromtimestamp(at, UTC), None)


def _by_symbol(orders: list[ExchangeOrder]) -> dict[str, list[ExchangeOrder]]:
    """Stop-losses grouped by symbol, so each line looks only at its own (not n x m)."""
    grouped: dict[str, list[ExchangeOrder]] = {}
    for order in orders:
        if order.is_stop_loss:
            grouped.setdefault(order.symbol, []).append(order)
    return grouped


def read_book(session: Session, src: BookSources, now: datetime) -> BookView:
    """The book: every open position, each judged against its own venue's exchange."""
    rows = _open_rows(session)
    venues = src.venues()
    reads = {name: _orders_or_error(venue.orders) for name, venue in venues.items()}
    marks = {
        name: venues[name].market.marks() if read.orders is not None else {}
        for name, read in reads.items()
    }
    stops = {
        name: _by_symbol(read.orders) if read.orders is not None else {}
        for name, read in reads.items()
    }
    missing: set[int] = set()
    lives: dict[int, book.LiveStop | None] = {}
    for p in rows:
        read = reads.get(p.exchange)
        if read is not None and read.orders is not None:
            live = book.live_stop(p.symbol, p.side, p.quantity, stops[p.exchange].get(p.symbol, []))
            lives[p.id] = live
            judged = book.judged_by(p.opened_at, read.read_at)
            if p.status == "active" and judged and (live is None or not live.covers):
                missing.add(p.id)
    first_seen = src.clock.observe(missing, now)
    out = [
        _book_row(p, src, marks, lives, p.id in missing, first_seen.get(p.id), now) for p in rows
    ]
    return BookView(
        rows=out,
        totals=book.totals(r.line for r in out),
        exchanges=sorted({p.exchange for p in rows} | set(venues)),
        exchange_error=_errors(reads),
        checked_at=now,
    )


def _errors(reads: dict[str, OrdersRead]) -> str | None:
    """The failed reads, each named by its venue when the deployment has several."""
    failed = {name: read.error for name, read in reads.items() if read.error}
    if not failed:
        return None
    if len(reads) == 1:
        return next(iter(failed.values()))
    return "; ".join(f"{name}: {error}" for name, error in sorted(failed.items()))


def _book_row(
    p: OpenRow,
    src: BookSources,
    marks: dict[str, dict[str, Decimal]],
    lives: dict[int, book.LiveStop | None],
    is_missing: bool,
    first_seen: datetime | None,
    now: datetime,
) -> BookRow:
    live_known = p.id in lives
    live = lives.get(p.id)
    mark = marks.get(p.exchange, {}).get(p.symbol)
    stop = live.price if live is not None else (None if live_known else p.stop_price)
    owner = None
    if live is not None:
        parsed = parse_client_id(live.client_id)
        owner = book.stop_owner(parsed.purpose, parsed.seq) if parsed else book.OWNER_FOREIGN
    elif not live_known and p.trailing_owner == "protection":
        owner = book.OWNER_PROTECTION
    market = src.market_of(p.exchange)
    price_places, qty_places = market.places(p.symbol) if market else (None, None)
    started = p.opened_at or p.created_at
    extreme = p.highest_price if p.side == "long" else p.lowest_price
    return BookRow(
        **p.facts(),
        entry=p.entry_price,
        mark=mark,
        pnl=book.unrealised_pnl(p.side, p.quantity, p.entry_price, mark),
        stop=stop,
        stop_distance=book.stop_distance_percent(p.side, stop, mark),
        stop_owner=owner,
        stop_client_id=live.client_id if live is not None else None,
        live_known=live_known,
        trailing_state=p.trailing_state,
        trailing_extreme=extreme,
        callback=src.callback_percent,
        aged_phase=p.aged_phase,
        aged_target=p.aged_target,
        age_seconds=(now - started).total_seconds(),
        unprotected_seconds=book.unprotected_seconds(
            is_missing, p.unprotected_since, first_seen, now
        ),
        correlation_id=p.correlation_id,
        price_places=price_places,
        qty_places=qty_places,
    )


SORTS: dict[str, Callable[[BookRow], Any]] = {
    "risk": lambda r: (r.unprotected_seconds is None, r.stop is not None, r.symbol),
    "symbol": lambda r: r.symbol,
    "age": lambda r: -r.age_seconds,
    "pnl": lambda r: r.pnl if r.pnl is not None else Decimal("Infinity"),
    "id": lambda r: -r.id,
}


def select_rows(
    view: BookView, exchange: str | None, status: str | None, sort: str | None
) -> list[BookRow]:
    rows = [
        r
        for r in view.rows
        if (not exchange or r.exchange == exchange) and (not status or r.status == status)
    ]
    return sorted(rows, key=SORTS.get(sort or "risk", SORTS["risk"]))


# --- one position ----------------------------------------------------------------------------


@dataclass
class PositionStory:
    position: Position
    signal: Signal | None
    events: list[Event]
    orders: list[Order]


def read_position(session: Session, position_id: int, limit: int = 500) -> PositionStory | None:
    position = session.get(Position, position_id)
    if position is None:
        return None
    signal = session.get(Signal, position.signal_id) if position.signal_id else None
    events = list(
        session.scalars(
            select(Event)
            .where(
                or_(
                    Event.correlation_id == position.correlation_id,
                    Event.position_id == position.id,
                )
            )
            .order_by(Event.id)
            .limit(limit)
        )
    )
    orders = list(
        session.scalars(select(Order).where(Order.position_id == position.id).order_by(Order.id))
    )
    return PositionStory(position, signal, events, orders)


def position_exists(session: Session, position_id: int) -> bool:
    return session.get(Position, position_id) is not None


# --- the system --------------------------------------------------------------------------------


@dataclass
class SystemView:
    waves: list[Wave]
    alerts: list[Alert]
    events: list[Event]
    queues: dict[str, int | None]


NOTABLE_EVENTS = ("warning", "error", "critical")
SIGNAL_EVENTS = ("signal_rejected", "signal_filtered", "signal_execution_failed")


def read_system(session: Session, queue_depth: Callable[[str], int | None]) -> SystemView:
    waves = list(session.scalars(select(Wave).order_by(Wave.id.desc()).limit(8)))
    alerts = list(
        session.scalars(
            select(Alert)
            .where(Alert.status.in_(("pending", "failed")))
            .order_by(Alert.id.desc())
            .limit(20)
        )
    )
    events = list(
        session.scalars(
            select(Event)
            .where(or_(Event.severity.in_(NOTABLE_EVENTS), Event.type.in_(SIGNAL_EVENTS)))
            .order_by(Event.id.desc())
            .limit(15)
        )
    )
    queues = {name: queue_depth(name) for name in QUEUES}
    return SystemView(waves, alerts, events, queues)


QUEUES = ("signals", "orders", "stops", "maintenance")
