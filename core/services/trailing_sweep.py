"""The trailing sweep (beat): re-decide every trailing position no tick woke lately.

Why: a position whose price stays inside its band wakes no price task, yet time alone can
matter (a deferred move falling due, time-based activation), a band can be lost (a Redis
restart) and protection reads the heartbeat to know trailing is watching. So every
``trailing_sweep_interval`` the positions not decided since are decided again at the latest
mark price.

Why in one batch: in a quiet market nearly every such decision changes nothing, and a price
run per position (the symbol lock, a fencing token, its transactions) cost ~13 ms of worker
time each, 6.5 s per sweep at 500 positions. The sweep therefore reads every trailing row in
one query, every mark price in one request (weight 10), the published bands and dead-run
flags in one Redis round trip, and decides purely (``core.domain.trailing_sweep``). Where
nothing would change, it only refreshes the heartbeat, for all of them in one UPDATE: no
lock is needed, since the heartbeat is the only write and any run that holds the lock
writes the same "watched now". Every other position (something to move, activate, record
or publish; an aged row; a run of its symbol that died; no mark price) gets its price task
as before, its window seeded with the mark price read here, so the run makes no REST call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import or_, select, update

from core.db.models import AgedPosition, Position, TrailingStop
from core.dead_runs import dead_key
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.domain.trailing_sweep import unchanged_at
from core.exchange import errors
from core.locks import lock_key
from core.services import bands, symbol_settings
from core.services.deps import Deps
from core.services.tick_window import TICK_SCRIPT, claim_pending, pending_key, release_pending
from core.services.tick_window import window_key as tick_window_key
from core.services.trailing import BAND_COMPONENT
from core.services.trailing_state import state_of, trailing_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    watched: int
    queued: int
    refreshed: int = 0  # decided in the batch: nothing to change, heartbeat refreshed

    def as_dict(self) -> dict[str, int]:
        return {"watched": self.watched, "queued": self.queued, "refreshed": self.refreshed}


@dataclass(frozen=True)
class _Due:
    position: Position
    row: TrailingStop
    aged: bool


def sweep(deps: Deps, send: Callable[[str, str], None]) -> SweepReport:
    """Decide every trailing position no tick has woken lately; wake the price task only of
    those where the decision would change something (see the module doc)."""
    exchange = deps.exchange_name
    now = deps.clock.now()
    stale_before = now - timedelta(seconds=deps.settings.trailing_sweep_interval)
    with deps.unit_of_work() as session:
        rows = session.execute(
            select(Position, TrailingStop, AgedPosition.position_id)
            .join(TrailingStop, TrailingStop.position_id == Position.id)
            .outerjoin(AgedPosition, AgedPosition.position_id == Position.id)
            .where(Position.exchange == exchange, Position.status == PositionStatus.ACTIVE)
        ).all()
    symbols = [position.symbol for position, _, _ in rows]
    published = bands.component_of_each(deps.redis, exchange, symbols, BAND_COMPONENT)
    due = [
        _Due(position, row, aged is not None)
        for position, row, aged in rows
        if row.heartbeat_at is None
        or row.heartbeat_at < stale_before
        or published[position.symbol] is None
    ]
    due = _not_pending(deps, due)
    if not due:
        return SweepReport(len(rows), 0)
    marks = _mark_prices(deps)
    quiet, wake = _split(deps, due, published, marks, now)
    _refresh_heartbeats(deps, [d.position.id for d in quiet], now)
    ttl = deps.settings.price_pending_ttl
    claimed = [symbol for symbol in wake if claim_pending(deps.redis, exchange, symbol, ttl)]
    _seed_windows(deps, exchange, claimed, marks, now)
    for index, symbol in enumerate(claimed):
        try:
            send(exchange, symbol)
        except BaseException:
            for unsent in claimed[index:]:
                release_pending(deps.redis, exchange, unsent)
            raise
    return SweepReport(len(rows), len(claimed), len(quiet))


def _not_pending(deps: Deps, due: list[_Due]) -> list[_Due]:
    """Without those whose price task is queued or running already (it will decide them)."""
    pipe = deps.redis.pipeline(transaction=False)
    for d in due:
        pipe.exists(pending_key(deps.exchange_name, d.position.symbol))
    held = pipe.execute() if due else []
    return [d for d, pending in zip(due, held, strict=True) if not pending]


def _mark_prices(deps: Deps) -> dict[str, Decimal]:
    """Every mark price in one request; none on failure (each run reads its own)."""
    try:
        return deps.exchange.mark_prices()
    except errors.ExchangeFailure as exc:
        log.warning("sweep could not read mark prices (runs read their own): %s", exc)
        return {}


def _split(
    deps: Deps,
    due: list[_Due],
    published: dict[str, PriceBand | None],
    marks: dict[str, Decimal],
    now: datetime,
) -> tuple[list[_Due], list[str]]:
    """(positions where a run would change nothing, symbols whose run is needed)."""
    exchange = deps.exchange_name
    pipe = deps.redis.pipeline(transaction=False)
    for d in due:
        pipe.exists(dead_key(lock_key(exchange, d.position.symbol)))
    dead = pipe.execute()
    quiet: list[_Due] = []
    wake: list[str] = []
    for d, died in zip(due, dead, strict=True):
        if not died and not d.aged and _unchanged(deps, d, published, marks, now):
            quiet.append(d)
        else:
            wake.append(d.position.symbol)
    return quiet, wake


def _unchanged(
    deps: Deps,
    d: _Due,
    published: dict[str, PriceBand | None],
    marks: dict[str, Decimal],
    now: datetime,
) -> bool:
    symbol = d.position.symbol
    mark = marks.get(symbol)
    if mark is None or d.position.entry_price is None:
        return False
    try:
        tick = deps.exchange.rules(symbol).tick_size
    except errors.ExchangeFailure:
        return False
    settings = symbol_settings.effective(deps.settings, deps.redis, d.position.exchange, symbol)
    state = state_of(d.row, d.position)
    return unchanged_at(state, mark, now, trailing_params(settings), tick, published[symbol])


def _refresh_heartbeats(deps: Deps, position_ids: list[int], now: datetime) -> None:
    """Trailing watched these positions now (never moves a heartbeat back)."""
    if not position_ids:
        return
    with deps.unit_of_work() as session:
        session.execute(
            update(TrailingStop)
            .where(
                TrailingStop.position_id.in_(position_ids),
                or_(TrailingStop.heartbeat_at.is_(None), TrailingStop.heartbeat_at < now),
            )
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )


def _seed_windows(
    deps: Deps, exchange: str, symbols: list[str], marks: dict[str, Decimal], now: datetime
) -> None:
    """The mark price, recorded as a tick in each woken symbol's window.

    The flags are already claimed, so the tick script only extends the windows.
    """
    tick_ms = int(now.timestamp() * 1000)
    pipe = deps.redis.pipeline(transaction=False)
    queued = 0
    for symbol in symbols:
        price = marks.get(symbol)
        if price is None:
            continue
        keys = [tick_window_key(exchange, symbol), pending_key(exchange, symbol)]
        pipe.eval(TICK_SCRIPT, 2, *keys, str(price), tick_ms, 1)
        queued += 1
    if queued:
        pipe.execute()
