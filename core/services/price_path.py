"""The price task: take a symbol's coalesced price window, react under its lock, republish.

Why coalescing (ARCHITECTURE "The price path"): the ingest sees every tick of every symbol
but only ticks that leave the symbol's band can change anything. For those it keeps one
record per symbol in Redis (latest price, high and low since the last take, the time of the
first tick) and queues one ``vigil.stops.on_price`` task only if none is pending or running
(a flag set with NX). A burst of a thousand ticks is one task that sees the burst's high
and low, so a backlog can never build up per symbol.

The task: take the window (atomically: read it, restart it at the last price), then under
the symbol lock run ``REACTIONS`` on the symbol's active position, each reaction in its own
transactions (trailing first, then the aged-position close, ``core.services.aged.react``);
trailing ends by publishing the band the ingest compares the next ticks with. The flag is
held for the whole run and released at its end, atomically with a check of the ticks that
arrived meanwhile against the *new* band: if any matters, the run queues its successor.
(Clearing the flag at take time instead would let every tick during a move, checked by the
ingest against the old band, queue a task that finds nothing to do: under a trending
market that doubled the tasks.) A failure that may pass (lock busy, exchange retryable)
puts the window back and keeps the flag, so the retry sees the burst and nothing else is
queued meanwhile.

The window's Redis layout and scripts (shared with the ingest's writer,
``core.ingest.prices``) live in ``core.services.tick_window``. The pending-or-running flag
expires after ``price_pending_ttl`` while queued, so a lost task cannot silence a symbol for
ever; while a run holds it, it lives ``lock_ttl`` and the run renews it, so a killed run
frees its symbol as fast as its lock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import bindparam, case, exists, select
from sqlalchemy.orm import Session

from core.db.models import AgedPosition, Position, TrailingStop
from core.domain.bands import PriceBand
from core.domain.positions import PositionStatus
from core.domain.trailing import PriceWindow
from core.exchange import errors
from core.lock_watchdog import LeaseWatchdog, renewing
from core.locks import NEXT_FENCE_TOKEN, HeldLock
from core.logging import bind_correlation
from core.services import aged, bands, stop_rows, symbol_settings, takeover, trailing
from core.services.closing import lock_for, sweep_after_close
from core.services.deps import Deps
from core.services.positions import open_position_criteria
from core.services.run_start import finish_and_release, start_run
from core.services.tick_window import (
    TICK_SCRIPT,
    RunEnd,
    TickWindow,
    claim_pending,
    finish_window,
    pending_key,
    release_pending,
    restore_window,
    take_window,
    window_key,
)
from core.services.trailing_sweep import SweepReport, sweep
from core.transient import SYMBOL_STEP_RETRYABLE

__all__ = [
    "TICK_SCRIPT",
    "SweepReport",
    "sweep",
    "RunEnd",
    "TickWindow",
    "claim_pending",
    "finish_window",
    "pending_key",
    "release_pending",
    "restore_window",
    "take_window",
    "window_key",
]

log = logging.getLogger(__name__)

Reaction = Callable[[Deps, HeldLock, Position, PriceWindow, datetime], bool]
"""One reaction to a price window; True when it closed the position."""


REACTIONS: tuple[tuple[Reaction, type[AgedPosition] | None], ...] = (
    (trailing.react, None),
    (aged.react, AgedPosition),
)
"""Trailing first (it may move the stop); then the aged close, which re-reads the position.

Beside each reaction, the table whose row (by position id) it needs, or None: a position
without that row skips the reaction (looked up in the run's first transaction; aged rows
are created under the symbol lock this run holds, so none appears meanwhile)."""

DecideIn = Callable[[Session, Deps, HeldLock, Position, PriceWindow, datetime], Callable[[], bool]]
"""A reaction's decision in the caller's transaction; returns the rest, run after commit."""

FIRST_IN_RUN_TRANSACTION: dict[Reaction, DecideIn] = {trailing.react: trailing.decide_in}
"""Reactions that, when first, decide in the run's first transaction (the one that found
the position and drew the fencing token) instead of one of their own."""

PRELOADED = (TrailingStop,)
"""The first reaction's row (by position id), read with the position in the run's first
statement: ``trailing.decide_in`` then finds it in the session (no statement of its own)."""


@dataclass(frozen=True)
class PriceTaskResult:
    """What one price run did; ``rerun_at``: queued again for then (a deferred move falls
    due); ``successor``: queued again now (ticks during the run mattered); ``closed``: a
    reaction closed the position (an aged close), so the symbol's zombie pass is due."""

    position_id: int | None
    window: TickWindow | None
    rerun_at: datetime | None = None
    successor: bool = False
    closed: bool = False


Requeue = Callable[[float], None]
"""Queue this symbol's price task to run in N seconds (the task layer's ``apply_async``)."""


def on_price(
    deps: Deps, exchange: str, symbol: str, requeue: Requeue | None = None
) -> PriceTaskResult:
    """The ``vigil.stops.on_price`` service: one symbol's window through every reaction.

    At most one run per symbol is pending or running: the flag set by the tick that queued
    this run stays held until the run ends. Then, atomically: if ticks that arrived during
    the run lie outside the band just published, the run queues its successor through
    ``requeue`` (flag kept); if a deferred move falls due soon, the run queues itself for
    then; otherwise the flag is released and the ingest queues the next run. Without
    ``requeue`` (a direct call) the flag is always released.
    """
    ttl = deps.settings.price_pending_ttl
    # while running, the flag lives only VIGIL_LOCK_TTL, renewed: it dies with the run
    run_ttl = deps.settings.lock_ttl
    # the window, the lock's first try and the settings version in one round trip
    start = start_run(deps.redis, deps.settings, exchange, symbol, run_ttl)
    taken = start.window
    # the version is current only if the lock did not make the run wait
    version = start.settings_version if start.lock.dead_run is not None else None
    try:
        with (
            renewing(deps.redis, pending_key(exchange, symbol), "running", run_ttl) as flag,
            bands.remembering(exchange, symbol) as band,
            symbol_settings.version_known(version),
            lock_for(deps, exchange, symbol, lazy_token=True, first_try=start.lock) as held,
        ):
            window = fresh_window(deps, taken, symbol)  # under the lock: its lease runs
            result = react_locked(deps, held, exchange, symbol, window)
            ending = _finish(deps, held, flag, exchange, symbol, requeue, band)
    except SYMBOL_STEP_RETRYABLE:  # the task retries, like a busy lock
        if taken is not None:
            with contextlib.suppress(RedisError):  # Redis down: the retry reads the mark
                restore_window(deps.redis, exchange, symbol, taken, ttl)
        raise  # the retry carries the window; the flag stays held for it
    except BaseException:
        release_pending(deps.redis, exchange, symbol)
        raise
    result = _end_run(deps, exchange, symbol, result, requeue, ending)
    if result.closed:  # outside the lock, like every close path's zombie pass
        sweep_after_close(deps, symbol)
    return result


@dataclass(frozen=True)
class _Ending:
    """How the run left its window (``RunEnd``) and when it is due again (None: not)."""

    end: RunEnd
    rerun_at: datetime | None
    countdown: float


def _finish(
    deps: Deps,
    held: HeldLock,
    flag: LeaseWatchdog,
    exchange: str,
    symbol: str,
    requeue: Requeue | None,
    published: bands.Remembered,
) -> _Ending:
    """The window's finish (the flag released, or kept for a successor or a re-run) and the
    lock's release in one round trip (``run_start.finish_and_release``), against the
    symbol's band as the run's last publish under the lock left it (read then). Both
    leases stop first, as they did when the run left their blocks."""
    now = deps.clock.now()
    band = published.band if published.known else bands.combined(deps.redis, exchange, symbol)
    rerun_at = _rerun_at(deps, band, now) if requeue is not None else None
    ttl = deps.settings.price_pending_ttl
    countdown = max(0.0, (rerun_at - now).total_seconds()) if rerun_at is not None else 0.0
    flag.stop()
    end = held.hand_back_with(
        lambda lock, owner: finish_and_release(
            deps.redis,
            exchange,
            symbol,
            band,
            now,
            ttl_s=countdown + ttl,
            keep=rerun_at is not None,
            lock=lock,
            owner=owner,
        )
    )
    return _Ending(end, rerun_at, countdown)


def _end_run(
    deps: Deps,
    exchange: str,
    symbol: str,
    result: PriceTaskResult,
    requeue: Requeue | None,
    ending: _Ending,
) -> PriceTaskResult:
    """After the lock: queue the successor or the re-run the finish kept the flag for."""
    if ending.end is RunEnd.RELEASED:
        return result
    if requeue is None:
        release_pending(deps.redis, exchange, symbol)
        return result
    try:
        requeue(ending.countdown)
    except BaseException:
        release_pending(deps.redis, exchange, symbol)
        raise
    return replace(result, rerun_at=ending.rerun_at, successor=ending.end is RunEnd.SUCCESSOR)


def fresh_window(deps: Deps, window: TickWindow | None, symbol: str) -> TickWindow:
    """The window, with the exchange's mark price when it holds no new tick.

    A window without ticks (first run for a symbol, a scheduled re-run, the sweep) only
    knows the last price that left the band, which may be minutes old; deciding a stop
    against it could ask for one above the market. One REST read fixes that.
    """
    if window is not None and window.ticks > 0:
        return window
    mark = deps.exchange.mark_price(symbol)
    if window is None:
        return TickWindow(mark, mark, mark)
    return TickWindow(max(window.high, mark), min(window.low, mark), mark, None, 0)


def react_locked(
    deps: Deps, held: HeldLock, exchange: str, symbol: str, window: TickWindow
) -> PriceTaskResult:
    """Run the reactions for the symbol's active position; the caller holds the lock.

    Each reaction re-reads the position in its own transactions and does nothing if it is
    no longer active (an earlier reaction may have closed it); the first may decide in the
    run's first transaction instead (``FIRST_IN_RUN_TRANSACTION``). Trailing publishes its
    band as its last step, from the state it just wrote; with no active position here the
    band is withdrawn, so the ingest stops waking this task for the symbol.
    """
    now = deps.clock.now()
    with deps.unit_of_work() as session:
        # the preloaded rows are held here: the session's identity map keeps them only weakly
        position, reactions, _preloaded = _load_run(session, held, exchange, symbol)
        active = position is not None and position.status == PositionStatus.ACTIVE
        if active:
            assert position is not None
            first = _decide_first(session, deps, held, position, reactions, window, now)
    if position is None or not active:
        bands.publish(deps.redis, exchange, symbol, trailing.BAND_COMPONENT, None)
        return PriceTaskResult(position.id if position else None, window)
    failures: list[errors.ExchangeFailure] = []
    closed = False
    with bind_correlation(position.correlation_id, position_id=position.id):
        takeover.after_dead_run(deps, held, position)  # a killed move's stop: adopt or cancel
        for index, react in enumerate(reactions):
            if index:
                held.extend()  # the lock was just taken for the first one
            try:
                if index == 0 and first is not None:  # decided in the first transaction
                    closed = first() or closed
                else:
                    closed = react(deps, held, position, window, now) or closed
            except errors.Retryable as exc:  # the other reactions still run; the task retries
                log.warning("price reaction %s failed for %s: %s", react.__module__, symbol, exc)
                failures.append(exc)
    if failures:
        raise failures[0]
    return PriceTaskResult(position.id, window, closed=closed)


def _decide_first(
    session: Session,
    deps: Deps,
    held: HeldLock,
    position: Position,
    reactions: list[Reaction],
    window: TickWindow,
    now: datetime,
) -> Callable[[], bool] | None:
    """The first reaction's decision in the run's first transaction, if it has that form
    and no dead run's intents wait (resolving them comes first); its second half, called
    after the commit. None: the reaction runs as usual, in transactions of its own."""
    decide_in = FIRST_IN_RUN_TRANSACTION.get(reactions[0]) if reactions else None
    if decide_in is None or held.dead_run is not False:
        return None
    try:
        return decide_in(session, deps, held, position, window, now)
    except errors.Retryable:  # before any write (the venue's rules): as usual, then
        return None


def _load_run(
    session: Session, held: HeldLock, exchange: str, symbol: str
) -> tuple[Position | None, list[Reaction], tuple[Any, ...]]:
    """The symbol's open position and the reactions whose row it has (see ``REACTIONS``), in
    one statement that also draws the lock's fencing token when the position is active
    (``CASE``: no token for a run that will write nothing) and loads ``PRELOADED``'s rows
    into the session, so the first reaction reads them without a statement of its own (the
    caller holds them for the transaction); the position's newest and open stop rows too,
    which a move's intent reads (``stop_rows``)."""
    needed = [(react, needs) for react, needs in REACTIONS if needs is not None]
    query = _run_statement(tuple(needs for _, needs in needed), PRELOADED)
    found = session.execute(query, {"run_exchange": exchange, "run_symbol": symbol}).one_or_none()
    if found is None:
        return None, [], ()
    position, token, stops = found[0], found[1 + len(PRELOADED)], found[2 + len(PRELOADED)]
    present = found[3 + len(PRELOADED) :]
    if token is not None:
        held.accept_token(int(token))
    stop_rows.preload(session, position.id, stops)
    missing = {react for (react, _), has in zip(needed, present, strict=True) if not has}
    preloaded = tuple(found[1 : 1 + len(PRELOADED)])
    return position, [react for react, _ in REACTIONS if react not in missing], preloaded


@functools.cache
def _run_statement(needed: tuple[type[Any], ...], preloaded: tuple[type[Any], ...]) -> Any:
    """``_load_run``'s SELECT, built once per reaction table set (the exchange and symbol
    bound at execution): built per run it cost about as much CPU as its execution."""
    query = select(
        Position,
        *preloaded,
        case((Position.status == PositionStatus.ACTIVE.value, NEXT_FENCE_TOKEN)),
        stop_rows.of_position(),
        *(exists().where(needs.position_id == Position.id) for needs in needed),
    ).select_from(Position)
    for row in preloaded:
        query = query.outerjoin(row, row.position_id == Position.id)
    criteria = open_position_criteria(bindparam("run_exchange"), bindparam("run_symbol"))
    return query.where(*criteria)


def _rerun_at(deps: Deps, band: PriceBand | None, now: datetime) -> datetime | None:
    """When time alone will change a decision soon (a deferred move): run then, tick or not.

    Further-off changes (time-based activation hours away) are the sweep's; ticks after
    ``valid_until`` wake the task anyway, since an expired band contains no price.
    """
    until = band.valid_until if band is not None else None
    horizon = timedelta(seconds=deps.settings.trailing_sweep_interval)
    if until is None or until <= now or until - now > horizon:
        return None
    return until
