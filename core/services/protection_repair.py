"""Protection's repair of one position: carry out its decision, step by step.

Split from ``core/services/protection.py`` (the cycle and the lock) so that each reads on
its own: this module is what protection does to the exchange once it has decided, through
the order executor (``core/services/executor.py``): a stop for the position's quantity
(looked up by client id before any resend, moved beyond the mark if the venue refuses it
as crossed), the partial stops it replaces cancelled only once it is live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db.models import Order, Position, TrailingStop
from core.domain.orders import OrderStatus
from core.domain.protection import (
    ProtectedPosition,
    ProtectionActionKind,
    ProtectionDecision,
    StopOwner,
)
from core.domain.sides import Side
from core.events import EventContext, EventType, record
from core.exchange import errors
from core.exchange.types import OrderSnapshot, PositionSnapshot
from core.locks import HeldLock
from core.services import executor
from core.services.deps import Deps
from core.services.executor import (
    Cancelled,
    Executor,
    OldOrder,
    OrderIntent,
    Replacement,
    Sent,
    status_of,
)
from core.services.positions import update as update_position

K = ProtectionActionKind
PURPOSE = "protection"


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


def guarded_of(position: Position, trailing: TrailingStop | None) -> Guarded:
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


class Repair:
    """Carry out one position's protection decision, in order, one transaction per step."""

    def __init__(
        self,
        deps: Deps,
        held: HeldLock,
        guarded: Guarded,
        on_exchange: PositionSnapshot,
        now: datetime,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deps = deps
        self.held = held
        self.g = guarded
        self.on_exchange = on_exchange
        self.now = now
        self.executor = Executor.of(deps, sleep=sleep)
        self.result = PositionResult()

    def run(self, decision: ProtectionDecision, orders: dict[str, OrderSnapshot]) -> PositionResult:
        actions = {a.kind: a for a in decision.actions}
        with self.deps.unit_of_work() as session:
            if K.TAKE_OVER_FROM_TRAILING in actions:
                self._take_over(session, actions[K.TAKE_OVER_FROM_TRAILING].reason)
            if K.PLACE_STOP in actions:
                self._detected(session, decision, actions[K.PLACE_STOP].reason, orders)
        surplus = actions.get(K.CANCEL_SURPLUS)
        old = _old_orders(surplus.order_ids if surplus is not None else (), orders)
        if K.PLACE_STOP in actions:
            place = actions[K.PLACE_STOP]
            assert place.price is not None and place.quantity is not None
            replaced = self._place(place.price, place.quantity, old)
            alert = actions.get(K.ALERT_UNPROTECTED)
            if alert is not None:
                self._alert(alert.duration, restored=replaced is not None)
            if replaced is None:
                return self.result  # never cancel a partial stop without its replacement
            self._report_cancels(replaced.cancels, orders)
        elif old:
            self.held.extend()
            self._report_cancels(self.executor.cancel_each(self.g.symbol, old), orders)
        if decision.protected and self.g.unprotected_since is not None:
            with self.deps.unit_of_work() as session:
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
            ctx=self.g.ctx,
            reason=reason,
            quantity=self.on_exchange.quantity,
            partial_stops=to_replace,
            owner=decision.owner,
            unprotected_since=decision.unprotected_since,
        )
        if decision.unprotected_since != self.g.unprotected_since:
            self._write(session, unprotected_since=decision.unprotected_since)

    def _place(
        self, price: Decimal, quantity: Decimal, old: tuple[OldOrder, ...]
    ) -> Replacement | None:
        """The full stop placed, then the stops it replaces cancelled (make before break);
        None, with the failure recorded, if the new stop could not be placed."""
        try:
            replaced = self._replace_stop(price, quantity, old)
        except errors.ExchangeFailure as exc:
            self.deps.record_alone(
                EventType.PROTECTION_STOP_FAILED,
                ctx=self.g.ctx,
                error=str(exc),
                code=exc.code,
                stop_price=price,
                quantity=quantity,
            )
            self.result.failed = True
            self.result.outcome = Outcome.FAILED
            return None
        sent = replaced.new
        stop_price = sent.trigger_price or price
        with self.deps.unit_of_work() as session:
            executor.record(session, sent.intent, OrderStatus.OPEN, sent.order)
            record(
                session,
                EventType.STOP_SET_BY_PROTECTION,
                ctx=self.g.ctx,
                order_id=sent.intent.client_id,
                exchange_order_id=sent.order.id,
                stop_price=stop_price,
                intended_stop=self.g.intended_stop,
                quantity=quantity,
                side=self.g.side.close_order_side,
            )
            self._write(session, stop_price=stop_price, unprotected_since=None)
        self.result.stop_placed = True
        return replaced

    def _replace_stop(
        self, price: Decimal, quantity: Decimal, old: tuple[OldOrder, ...]
    ) -> Replacement:
        """The executor's replacement; a stop whose send was interrupted and is live after
        all is the new stop (only the break step is left). A lost answer is looked up by
        client id before any resend."""
        found = self._interrupted_intent()
        if found is not None:
            self.held.extend()
            return Replacement(found, self.executor.cancel_each(self.g.symbol, old))
        with self.deps.unit_of_work() as session:
            position = session.get(Position, self.g.position_id)
            assert position is not None
            seq = session.scalar(
                select(func.count(Order.id)).where(
                    Order.position_id == self.g.position_id, Order.purpose == PURPOSE
                )
            )
            intent = self._intent(position, quantity, price, seq or 0)
            executor.record(session, intent)
        try:
            self.held.extend()  # a full TTL for the replacement: the send and the cancels
            return self.executor.replace_stop(
                intent, old, attempts=self.deps.settings.stop_place_attempts
            )
        except errors.ExchangeFailure:
            with self.deps.unit_of_work() as session:
                executor.record(session, intent, OrderStatus.REJECTED)
            raise

    def _intent(
        self, position: Position, quantity: Decimal, price: Decimal | None, seq: int
    ) -> OrderIntent:
        return OrderIntent.of(
            position,
            PURPOSE,
            self.g.side.close_order_side,
            quantity,
            seq=seq,
            trigger_price=price,
        )

    def _interrupted_intent(self) -> Sent | None:
        """Settle protection stops whose send was interrupted (worker killed mid-call).

        Each is looked up by client id, its ledger row updated; a live one that covers the
        position is the stop this repair would place, so nothing new is sent.
        """
        with self.deps.unit_of_work() as session:
            pending = [
                OrderIntent.from_ledger(o)
                for o in session.scalars(
                    select(Order)
                    .where(
                        Order.position_id == self.g.position_id,
                        Order.purpose == PURPOSE,
                        Order.status == OrderStatus.INTENT.value,
                    )
                    .order_by(Order.id.desc())
                )
            ]
        live: Sent | None = None
        for intent in pending:
            found = self.executor.lookup(intent)
            with self.deps.unit_of_work() as session:
                executor.record(session, intent, status_of(found), found)
            if (
                live is None
                and found is not None
                and found.is_open
                and (found.close_position or found.amount >= self.on_exchange.quantity)
            ):
                live = Sent(found, intent, sent=False)
        return live

    def _alert(self, duration: timedelta | None, *, restored: bool) -> None:
        self.deps.record_alone(
            EventType.POSITION_UNPROTECTED_ALERT,
            ctx=self.g.ctx,
            unprotected_seconds=duration.total_seconds() if duration else None,
            unprotected_since=self.g.unprotected_since,
            stop_restored=restored,
        )
        self.result.alerted = True

    def _report_cancels(
        self, cancels: tuple[Cancelled, ...], orders: dict[str, OrderSnapshot]
    ) -> None:
        """One event per surplus stop the repair cancelled (or failed to cancel)."""
        for done in cancels:
            order_id = done.order.exchange_id
            order = orders.get(order_id) if order_id is not None else None
            if done.failure is not None:
                self.deps.record_alone(
                    EventType.EXCHANGE_ERROR,
                    ctx=self.g.ctx,
                    order_id=done.order.client_id,
                    exchange_order_id=order_id,
                    operation="cancel_surplus_stop",
                    error=str(done.failure),
                )
                continue
            self.deps.record_alone(
                EventType.SURPLUS_STOP_CANCELLED,
                ctx=self.g.ctx,
                order_id=done.order.client_id,
                exchange_order_id=order_id,
                already_gone=done.gone_before,
                quantity=order.amount if order is not None else None,
            )
            self.result.surplus_cancelled += not done.gone_before

    def _write(self, session: Session, **values: object) -> None:
        """A fenced write to the position: refused if a newer lock holder wrote it."""
        position = session.get(Position, self.g.position_id, populate_existing=True)
        assert position is not None
        update_position(session, position, self.held.token, **values)


def _old_orders(
    order_ids: tuple[str, ...], orders: dict[str, OrderSnapshot]
) -> tuple[OldOrder, ...]:
    """The surplus stops (by exchange id) a repair removes, as the executor cancels them."""
    return tuple(
        OldOrder(
            orders[oid].client_id if oid in orders else None,
            oid,
            orders[oid].conditional if oid in orders else True,
        )
        for oid in order_ids
    )
