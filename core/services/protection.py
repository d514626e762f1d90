"""Protection: every active position has a live, full stop on the exchange.

One cycle (beat, every ``protection_interval``; or by hand):

1. load the ``active`` positions (with their trailing state) and take ONE snapshot of the
   exchange (all positions, all open orders: three calls, whatever the number of positions);
2. decide each position from the snapshot (``core.domain.protection.decide_protection``);
   a healthy one costs nothing more;
3. a position that needs something (no stop, a partial stop, surplus stops, a stale trailing
   owner, an ``unprotected_since`` to clear) is handled under its symbol lock, after
   reading the exchange again: the snapshot is stale by then, and the lock is what keeps
   protection and trailing from both placing a stop (``trailing_stops.owner``, the durable
   stop owner, is flipped only there; trailing follows the same rule).

What protection leaves alone, and why: positions in ``pending_entry`` / ``entry_placed`` /
``pending_sl`` / ``closing`` belong to the opening or closing path (and recovery); a DB
position the exchange does not have is reconciliation's phantom (placing a stop for it
would leave a zombie behind, freqtrade#12528); a position whose side differs from the
exchange's is a critical mismatch for a human.

The repair itself (``Repair``, ``core/services/protection_repair.py``) sends through the
order executor. Stops placed here carry client ids with purpose ``protection`` and a fresh
sequence number, written to the order ledger before they are sent; an intent whose answer
was lost is looked up by its client id before anything new is placed. A partial stop is
replaced make before break: the full one is placed first, the partial one cancelled after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, TrailingStop
from core.domain.positions import PositionStatus
from core.domain.protection import (
    ProtectionActionKind,
    ProtectionDecision,
    ProtectionParams,
    decide_protection,
)
from core.domain.sizing import MarketRules
from core.events import EventType, Severity, record
from core.exchange import errors
from core.exchange.types import OrderSnapshot, PositionSnapshot
from core.locks import HeldLock, LockLost, LockNotAcquired, StaleFence
from core.logging import bind_correlation
from core.services import snapshot, symbol_settings
from core.services.deps import Deps
from core.services.positions import context
from core.services.protection_repair import (
    Guarded,
    Outcome,
    PositionResult,
    Repair,
    guarded_of,
)

K = ProtectionActionKind


def protection_params(settings: Settings) -> ProtectionParams:
    return ProtectionParams(
        stop_loss_pct=settings.stop_loss_percent,
        mark_buffer_pct=settings.protection_mark_buffer_percent,
        trailing_heartbeat_timeout=timedelta(minutes=settings.trailing_heartbeat_stale_minutes),
        unprotected_alert_after=timedelta(seconds=settings.unprotected_alert_seconds),
    )


def _params_for(deps: Deps, exchange: str, symbol: str) -> ProtectionParams:
    """Protection's parameters for one symbol (its stop-loss % may be overridden); used only
    to place a stop that is missing, so an override never moves a live stop."""
    return protection_params(symbol_settings.effective(deps.settings, deps.redis, exchange, symbol))


def _load_active(session: Session, exchange: str) -> list[Guarded]:
    rows = session.execute(
        select(Position, TrailingStop)
        .outerjoin(TrailingStop, TrailingStop.position_id == Position.id)
        .where(Position.exchange == exchange, Position.status == PositionStatus.ACTIVE.value)
        .order_by(Position.id)
    ).all()
    return [guarded_of(position, trailing) for position, trailing in rows]


def _load_one(session: Session, position_id: int) -> Guarded | None:
    position = session.get(Position, position_id, populate_existing=True)
    if position is None:
        return None
    trailing = session.get(TrailingStop, position_id, populate_existing=True)
    return guarded_of(position, trailing)


def _rules(deps: Deps, symbol: str) -> MarketRules | None:
    """The market's precision (from cached markets: no request); None if not trading.

    A position on a symbol that stopped trading still needs its stop: protection then
    sends an unrounded price rather than giving up.
    """
    try:
        return deps.exchange.rules(symbol)
    except errors.SymbolUnavailable:
        return None


def _decide(
    guarded: Guarded,
    on_exchange: PositionSnapshot,
    orders: list[OrderSnapshot],
    mark: Decimal,
    now: datetime,
    params: ProtectionParams,
    rules: MarketRules | None,
) -> ProtectionDecision:
    known = snapshot.engine_client_ids(orders, {guarded.position_id: guarded.correlation_id})
    return decide_protection(
        guarded.view(on_exchange),
        [o.to_domain() for o in orders],
        mark,
        now,
        params,
        tick_size=rules.tick_size if rules else None,
        step_size=rules.step_size if rules else Decimal(0),
        known_client_ids=known,
    )


def needs_action(decision: ProtectionDecision, guarded: Guarded) -> bool:
    """Anything to do beyond "fine": an action, an owner flip, or a stale unprotected mark."""
    return (
        decision.kinds != (K.OK,)
        or decision.owner is not guarded.owner
        or decision.unprotected_since != guarded.unprotected_since
    )


# --- results ----------------------------------------------------------------------------------


@dataclass
class ProtectionReport:
    positions: int = 0
    healthy: int = 0
    rechecked: int = 0
    stops_placed: int = 0
    surplus_cancelled: int = 0
    taken_over: int = 0
    alerts: int = 0
    failed: int = 0
    deferred: int = 0
    not_on_exchange: int = 0
    details: list[dict[str, object]] = field(default_factory=list)

    def add(self, position_id: int, result: PositionResult) -> None:
        self.stops_placed += result.stop_placed
        self.taken_over += result.taken_over
        self.surplus_cancelled += result.surplus_cancelled
        self.alerts += result.alerted
        self.failed += result.failed
        if result.outcome is Outcome.DEFERRED:
            self.deferred += 1
        elif result.outcome is Outcome.NOT_ON_EXCHANGE:
            self.not_on_exchange += 1
        elif result.outcome is Outcome.HEALTHY:
            self.healthy += 1
        if result.outcome is not Outcome.HEALTHY:
            self.details.append({"position_id": position_id, **asdict(result)})

    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "details"}


# --- the cycle --------------------------------------------------------------------------------


def check_protection(deps: Deps) -> ProtectionReport:
    """One protection cycle over every active position of this exchange (see module doc)."""
    now = deps.clock.now()
    report = ProtectionReport()
    with deps.unit_of_work() as session:
        guarded = _load_active(session, deps.exchange_name)
        record(
            session,
            EventType.PROTECTION_CHECK_STARTED,
            exchange=deps.exchange_name,
            positions=len(guarded),
        )
    report.positions = len(guarded)
    snap = snapshot.take_or_record(deps, "protection")
    for g in guarded:
        on_exchange = snap.position(g.symbol, g.side)
        if on_exchange is None:
            report.not_on_exchange += 1  # phantom or side mismatch: reconciliation's call
            continue
        decision = _decide(
            g,
            on_exchange,
            snap.orders_on(g.symbol),
            on_exchange.mark_price or on_exchange.entry_price,
            now,
            _params_for(deps, g.exchange, g.symbol),
            _rules(deps, g.symbol),
        )
        if not needs_action(decision, g):
            report.healthy += 1
            continue
        report.rechecked += 1
        report.add(g.position_id, protect_position(deps, g.position_id))
    deps.record_alone(
        EventType.PROTECTION_CHECK_COMPLETED,
        exchange=deps.exchange_name,
        **report.counts(),
    )
    return report


def protect_position(deps: Deps, position_id: int) -> PositionResult:
    """Re-check and repair one position's protection under its symbol lock.

    A busy lock defers the position to the next cycle; an exchange failure or a lost lock
    is recorded and reported as failed; neither stops the cycle.
    """
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None:
            return PositionResult(outcome=Outcome.NOT_ACTIVE)
        symbol, ctx = position.symbol, context(position)
    try:
        with snapshot.guardian_lock(deps, symbol) as held:
            return protect_locked(deps, held, position_id)
    except LockNotAcquired:
        return PositionResult(outcome=Outcome.DEFERRED)
    except (StaleFence, LockLost, errors.ExchangeFailure) as exc:
        # the re-check's exchange read failed, or a newer holder took the lock: recorded,
        # the position counted as failed, the cycle goes on
        exchange_trouble = isinstance(exc, errors.ExchangeFailure)
        deps.record_alone(
            EventType.PROTECTION_STOP_FAILED
            if exchange_trouble
            else EventType.LOCK_STALE_WRITE_REJECTED,
            severity=Severity.ERROR if exchange_trouble else Severity.WARNING,
            ctx=ctx,
            error=str(exc),
            **({"stage": "re-check"} if exchange_trouble else {"guardian": "protection"}),
        )
        return PositionResult(outcome=Outcome.FAILED, failed=True)


def protect_locked(deps: Deps, held: HeldLock, position_id: int) -> PositionResult:
    """``protect_position`` for a caller that already holds the symbol's lock.

    Reconciliation calls this after correcting a quantity, so the stop is made to cover the
    new quantity by the same rules (and the same ownership) as any other repair.
    """
    with deps.unit_of_work() as session:
        guarded = _load_one(session, position_id)
    if guarded is None or guarded.status != PositionStatus.ACTIVE:
        return PositionResult(outcome=Outcome.NOT_ACTIVE)
    snap = snapshot.take(deps)
    on_exchange = snap.position(guarded.symbol, guarded.side)
    if on_exchange is None:
        return PositionResult(outcome=Outcome.NOT_ON_EXCHANGE)
    rules = _rules(deps, guarded.symbol)
    mark = on_exchange.mark_price or deps.exchange.mark_price(guarded.symbol)
    now = deps.clock.now()
    params = _params_for(deps, guarded.exchange, guarded.symbol)
    orders = snap.orders_on(guarded.symbol)
    decision = _decide(guarded, on_exchange, orders, mark, now, params, rules)
    if not needs_action(decision, guarded):
        return PositionResult(outcome=Outcome.HEALTHY)
    repair = Repair(deps, held, guarded, on_exchange, now)
    ctx = guarded.ctx
    with bind_correlation(ctx.correlation_id, position_id=ctx.position_id):
        return repair.run(decision, {o.id: o for o in orders})


def unprotected_positions(session: Session, exchange: str) -> list[tuple[int, str, datetime]]:
    """(id, symbol, since) of active positions protection last saw without a full stop."""
    rows = session.execute(
        select(Position.id, Position.symbol, Position.unprotected_since)
        .where(
            Position.exchange == exchange,
            Position.status == PositionStatus.ACTIVE.value,
            Position.unprotected_since.is_not(None),
        )
        .order_by(Position.unprotected_since)
    ).all()
    return [(pid, symbol, since) for pid, symbol, since in rows if since is not None]
