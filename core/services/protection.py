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

Stops placed here carry client ids with purpose ``protection`` and a fresh sequence number,
written to the order ledger before they are sent; an intent whose answer was lost is looked
up by its client id before anything new is placed. A partial stop is replaced make before
break: the full one is placed first, the partial one cancelled after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import PositionStatus
from core.domain.protection import (
    ProtectedPosition,
    ProtectionActionKind,
    ProtectionDecision,
    ProtectionParams,
    StopOwner,
    decide_protection,
    safe_stop_price,
)
from core.domain.sides import Side
from core.domain.sizing import MarketRules
from core.events import EventContext, EventType, Severity, record
from core.exchange import errors
from core.exchange.client_ids import client_order_id
from core.exchange.types import OrderSnapshot, PositionSnapshot
from core.locks import HeldLock, LockLost, LockNotAcquired, StaleFence
from core.logging import bind_correlation
from core.services import snapshot, symbol_settings
from core.services.deps import Deps
from core.services.positions import context, record_order
from core.services.positions import update as update_position

K = ProtectionActionKind
PURPOSE = "protection"


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


# --- what protection knows about one position -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Guarded:
    """An active position joined with its trailing state, detached from any session."""

    position_id: int
    exchange: str
    symbol: str
    side: Side
    status: str
    correlation_id: str
    entry_price: Decimal | None
    stop_price: Decimal | None
    unprotected_since: datetime | None
    owner: StopOwner
    heartbeat_at: datetime | None
    trailing_stop: Decimal | None
    has_trailing: bool

    @property
    def ctx(self) -> EventContext:
        return EventContext(self.exchange, self.symbol, self.position_id, self.correlation_id)

    @property
    def intended_stop(self) -> Decimal | None:
        """The stop the engine last decided: trailing's current stop, else the position's."""
        return self.trailing_stop if self.trailing_stop is not None else self.stop_price

    def view(self, on_exchange: PositionSnapshot) -> ProtectedPosition:
        """The domain's view; quantity and index come from the exchange (the truth)."""
        return ProtectedPosition(
            symbol=self.symbol,
            side=self.side,
            quantity=on_exchange.quantity,
            entry_price=self.entry_price or on_exchange.entry_price,
            stop_owner=self.owner,
            trailing_heartbeat_at=self.heartbeat_at,
            intended_stop=self.intended_stop,
            unprotected_since=self.unprotected_since,
            position_idx=on_exchange.position_idx,
        )


def _guarded(position: Position, trailing: TrailingStop | None) -> Guarded:
    return Guarded(
        position_id=position.id,
        exchange=position.exchange,
        symbol=position.symbol,
        side=Side(position.side),
        status=position.status,
        correlation_id=position.correlation_id,
        entry_price=position.entry_price,
        stop_price=position.stop_price,
        unprotected_since=position.unprotected_since,
        owner=StopOwner(trailing.owner) if trailing is not None else StopOwner.PROTECTION,
        heartbeat_at=trailing.heartbeat_at if trailing is not None else None,
        trailing_stop=trailing.current_stop if trailing is not None else None,
        has_trailing=trailing is not None,
    )


def _load_active(session: Session, exchange: str) -> list[Guarded]:
    rows = session.execute(
        select(Position, TrailingStop)
        .outerjoin(TrailingStop, TrailingStop.position_id == Position.id)
        .where(Position.exchange == exchange, Position.status == PositionStatus.ACTIVE.value)
        .order_by(Position.id)
    ).all()
    return [_guarded(position, trailing) for position, trailing in rows]


def _load_one(session: Session, position_id: int) -> Guarded | None:
    position = session.get(Position, position_id, populate_existing=True)
    if position is None:
        return None
    trailing = session.get(TrailingStop, position_id, populate_existing=True)
    return _guarded(position, trailing)


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


class Outcome(StrEnum):
    ACTED = "acted"
    HEALTHY = "healthy"  # fine after all when re-read under the lock
    DEFERRED = "deferred"  # symbol lock busy: next cycle
    NOT_ON_EXCHANGE = "not_on_exchange"  # phantom or side mismatch: reconciliation's
    NOT_ACTIVE = "not_active"  # closed or closing meanwhile
    FAILED = "failed"


@dataclass
class PositionResult:
    """What protection did for one position that needed a look under the lock."""

    outcome: Outcome = Outcome.ACTED
    stop_placed: bool = False
    taken_over: bool = False
    surplus_cancelled: int = 0
    alerted: bool = False
    failed: bool = False


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
    with unit_of_work() as session:
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
    with unit_of_work() as session:
        record(
            session,
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
    with unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None:
            return PositionResult(outcome=Outcome.NOT_ACTIVE)
        symbol, ctx = position.symbol, context(position)
    try:
        with snapshot.guardian_lock(deps, symbol) as held:
            return protect_locked(deps, held, position_id)
    except LockNotAcquired:
        return PositionResult(outcome=Outcome.DEFERRED)
    except (StaleFence, LockLost) as exc:
        with unit_of_work() as session:
            record(
                session,
                EventType.LOCK_STALE_WRITE_REJECTED,
                severity=Severity.WARNING,
                ctx=ctx,
                guardian="protection",
                error=str(exc),
            )
        return PositionResult(outcome=Outcome.FAILED, failed=True)
    except errors.ExchangeFailure as exc:
        with unit_of_work() as session:
            record(
                session,
                EventType.PROTECTION_STOP_FAILED,
                severity=Severity.ERROR,
                ctx=ctx,
                stage="re-check",
                error=str(exc),
            )
        return PositionResult(outcome=Outcome.FAILED, failed=True)


def protect_locked(deps: Deps, held: HeldLock, position_id: int) -> PositionResult:
    """``protect_position`` for a caller that already holds the symbol's lock.

    Reconciliation calls this after correcting a quantity, so the stop is made to cover the
    new quantity by the same rules (and the same ownership) as any other repair.
    """
    with unit_of_work() as session:
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
    repair = Repair(deps, held, guarded, on_exchange, rules, params, now)
    ctx = guarded.ctx
    with bind_correlation(ctx.correlation_id, position_id=ctx.position_id):
        return repair.run(decision, {o.id: o for o in orders})


class Repair:
    """Carry out one position's protection decision, in order, one transaction per step."""

    def __init__(
        self,
        deps: Deps,
        held: HeldLock,
        guarded: Guarded,
        on_exchange: PositionSnapshot,
        rules: MarketRules | None,
        params: ProtectionParams,
        now: datetime,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deps = deps
        self.ex = deps.exchange
        self.held = held
        self.g = guarded
        self.on_exchange = on_exchange
        self.rules = rules
        self.params = params
        self.now = now
        self.sleep = sleep
        self.result = PositionResult()

    def run(self, decision: ProtectionDecision, orders: dict[str, OrderSnapshot]) -> PositionResult:
        actions = {a.kind: a for a in decision.actions}
        with unit_of_work() as session:
            if K.TAKE_OVER_FROM_TRAILING in actions:
                self._take_over(session, actions[K.TAKE_OVER_FROM_TRAILING].reason)
            if K.PLACE_STOP in actions:
                self._detected(session, decision, actions[K.PLACE_STOP].reason, orders)
        if K.PLACE_STOP in actions:
            place = actions[K.PLACE_STOP]
            assert place.price is not None and place.quantity is not None
            placed = self._place(place.price, place.quantity)
            alert = actions.get(K.ALERT_UNPROTECTED)
            if alert is not None:
                self._alert(alert.duration, restored=placed)
            if not placed:
                return self.result  # never cancel a partial stop without its replacement
        if K.CANCEL_SURPLUS in actions:
            self._cancel_surplus(actions[K.CANCEL_SURPLUS].order_ids, orders)
        if decision.protected and self.g.unprotected_since is not None:
            with unit_of_work() as session:
                self._write(session, unprotected_since=None)
        return self.result

    # --- steps ------------------------------------------------------------------------------

    def _take_over(self, session: Session, reason: str) -> None:
        session.execute(
            update(TrailingStop)
            .where(TrailingStop.position_id == self.g.position_id)
            .values(owner=StopOwner.PROTECTION.value)
        )
        stale_for = (self.now - self.g.heartbeat_at) if self.g.heartbeat_at else None
        record(
            session,
            EventType.TRAILING_STOP_TAKEN_OVER,
            severity=Severity.WARNING,
            ctx=self.g.ctx,
            reason=reason,
            heartbeat_at=self.g.heartbeat_at,
            heartbeat_age_seconds=stale_for.total_seconds() if stale_for else None,
        )
        self.result.taken_over = True

    def _detected(
        self,
        session: Session,
        decision: ProtectionDecision,
        reason: str,
        orders: dict[str, OrderSnapshot],
    ) -> None:
        to_replace = [
            orders[oid].client_id or oid
            for a in decision.actions
            if a.kind is K.CANCEL_SURPLUS
            for oid in a.order_ids
            if oid in orders
        ]
        record(
            session,
            EventType.MISSING_STOP_DETECTED,
            severity=Severity.WARNING,
            ctx=self.g.ctx,
            reason=reason,
            quantity=self.on_exchange.quantity,
            partial_stops=to_replace,
            owner=decision.owner,
            unprotected_since=decision.unprotected_since,
        )
        if decision.unprotected_since != self.g.unprotected_since:
            self._write(session, unprotected_since=decision.unprotected_since)

    def _place(self, price: Decimal, quantity: Decimal) -> bool:
        try:
            stop, cid, price = self._send_stop(price, quantity)
        except errors.ExchangeFailure as exc:
            with unit_of_work() as session:
                record(
                    session,
                    EventType.PROTECTION_STOP_FAILED,
                    severity=Severity.ERROR,
                    ctx=self.g.ctx,
                    error=str(exc),
                    code=exc.code,
                    stop_price=price,
                    quantity=quantity,
                )
            self.result.failed = True
            self.result.outcome = Outcome.FAILED
            return False
        with unit_of_work() as session:
            self._ledger(session, cid, quantity, stop.trigger_price or price, "open", stop)
            record(
                session,
                EventType.STOP_SET_BY_PROTECTION,
                ctx=self.g.ctx,
                order_id=cid,
                exchange_order_id=stop.id,
                stop_price=stop.trigger_price or price,
                intended_stop=self.g.intended_stop,
                quantity=quantity,
                side=self.g.side.close_order_side,
            )
            self._write(session, stop_price=stop.trigger_price or price, unprotected_since=None)
        self.result.stop_placed = True
        return True

    def _send_stop(self, price: Decimal, quantity: Decimal) -> tuple[OrderSnapshot, str, Decimal]:
        """Place the stop; a lost answer is looked up by client id before any resend."""
        found = self._interrupted_intent()
        if found is not None:
            return found
        close_side = self.g.side.close_order_side
        with unit_of_work() as session:
            seq = session.scalar(
                select(func.count(Order.id)).where(
                    Order.position_id == self.g.position_id, Order.purpose == PURPOSE
                )
            )
            cid = client_order_id(self.g.position_id, self.g.correlation_id, PURPOSE, seq or 0)
            self._ledger(session, cid, quantity, price, "intent")
        last: errors.ExchangeFailure | None = None
        for attempt in range(self.deps.settings.stop_place_attempts):
            if attempt:
                self.held.extend()
                existing = self.ex.fetch_order(self.g.symbol, cid, conditional=True)
                if existing is not None and existing.is_open:
                    return existing, cid, price
                if existing is not None:
                    last = errors.OrderRejected(f"stop {cid} is {existing.status}")
                    break
            try:
                return (
                    self.ex.create_stop(self.g.symbol, close_side, quantity, price, cid),
                    cid,
                    price,
                )
            except errors.WouldTriggerImmediately as exc:
                # the mark crossed the price after it was read: move the price with the mark
                last = exc
                mark = self.ex.mark_price(self.g.symbol)
                tick = self.rules.tick_size if self.rules else None
                price, _ = safe_stop_price(
                    price, mark, self.g.side, self.params.mark_buffer_pct, tick
                )
            except errors.Retryable as exc:  # incl. unknown outcome: looked up next attempt
                last = exc
                self.sleep(min(0.2 * (attempt + 1), 1.0))
            except errors.Permanent as exc:
                last = exc
                break
        with unit_of_work() as session:
            self._ledger(session, cid, quantity, price, "rejected")
        assert last is not None
        raise last

    def _interrupted_intent(self) -> tuple[OrderSnapshot, str, Decimal] | None:
        """Settle protection stops whose send was interrupted (worker killed mid-call).

        Each is looked up by client id, its ledger row updated; a live one that covers the
        position is the stop this repair would place, so nothing new is sent.
        """
        with unit_of_work() as session:
            pending = [
                (o.client_order_id, o.quantity, o.trigger_price)
                for o in session.scalars(
                    select(Order)
                    .where(
                        Order.position_id == self.g.position_id,
                        Order.purpose == PURPOSE,
                        Order.status == "intent",
                    )
                    .order_by(Order.id.desc())
                )
            ]
        live: tuple[OrderSnapshot, str, Decimal] | None = None
        for cid, quantity, trigger in pending:
            found = self.ex.fetch_order(self.g.symbol, cid, conditional=True)
            with unit_of_work() as session:
                self._ledger(session, cid, quantity, trigger, _ledger_status(found), found)
            if (
                live is None
                and found is not None
                and found.is_open
                and (found.close_position or found.amount >= self.on_exchange.quantity)
            ):
                live = (found, cid, found.trigger_price or trigger or Decimal(0))
        return live

    def _alert(self, duration: timedelta | None, *, restored: bool) -> None:
        with unit_of_work() as session:
            record(
                session,
                EventType.POSITION_UNPROTECTED_ALERT,
                severity=Severity.CRITICAL,
                ctx=self.g.ctx,
                unprotected_seconds=duration.total_seconds() if duration else None,
                unprotected_since=self.g.unprotected_since,
                stop_restored=restored,
            )
        self.result.alerted = True

    def _cancel_surplus(self, order_ids: tuple[str, ...], orders: dict[str, OrderSnapshot]) -> None:
        for order_id in order_ids:
            order = orders.get(order_id)
            conditional = order.conditional if order is not None else True
            client_id = order.client_id if order is not None else None
            try:
                self.held.extend()
                cancelled = self.ex.cancel_order(self.g.symbol, order_id, conditional=conditional)
            except errors.ExchangeFailure as exc:
                with unit_of_work() as session:
                    record(
                        session,
                        EventType.EXCHANGE_ERROR,
                        severity=Severity.WARNING,
                        ctx=self.g.ctx,
                        order_id=client_id,
                        exchange_order_id=order_id,
                        operation="cancel_surplus_stop",
                        error=str(exc),
                    )
                continue
            with unit_of_work() as session:
                record(
                    session,
                    EventType.SURPLUS_STOP_CANCELLED,
                    ctx=self.g.ctx,
                    order_id=client_id,
                    exchange_order_id=order_id,
                    already_gone=not cancelled,
                    quantity=order.amount if order is not None else None,
                )
            self.result.surplus_cancelled += cancelled

    def _ledger(
        self,
        session: Session,
        cid: str,
        quantity: Decimal,
        trigger: Decimal | None,
        status: str,
        order: OrderSnapshot | None = None,
    ) -> None:
        record_order(
            session,
            session.get(Position, self.g.position_id),
            exchange=self.g.exchange,
            symbol=self.g.symbol,
            client_order_id=cid,
            purpose=PURPOSE,
            side=self.g.side.close_order_side.value,
            order_type="stop_market",
            quantity=quantity,
            status=status,
            exchange_order_id=order.id if order is not None else None,
            trigger_price=trigger,
            reduce_only=True,
        )

    def _write(self, session: Session, **values: object) -> None:
        """A fenced write to the position: refused if a newer lock holder wrote it."""
        position = session.get(Position, self.g.position_id, populate_existing=True)
        assert position is not None
        update_position(session, position, self.held.token, **values)


def _ledger_status(found: OrderSnapshot | None) -> str:
    if found is None:
        return "rejected"  # never reached the exchange
    if found.is_open:
        return "open"
    return {"canceled": "cancelled", "closed": "filled"}.get(found.status, "expired")


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
