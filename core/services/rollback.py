"""The opening's way back: close an entry whose stop could not be placed, verify the close
on the exchange, and if even that fails protect the position with a wide emergency stop.

A step of ``Opening`` (``core/services/opening.py``), kept apart because it is the path
nobody wants to take and should be read on its own: the close is reduce-only (it can never
open or grow a position) and looked up by its client id before it is sent, so a rerun after
a lost answer never sends a second close.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position
from core.domain.orders import OrderPurpose as P
from core.domain.orders import OrderStatus
from core.domain.positions import PositionTrigger
from core.domain.sides import Side, price_against
from core.domain.sizing import round_stop_price
from core.events import EventType, Severity, record
from core.exchange import errors
from core.exchange.adapter import ExchangeAdapter
from core.locks import HeldLock
from core.polling import Poll
from core.services import executor
from core.services.closing import exit_from_trades, finish
from core.services.executor import Executor, OrderIntent
from core.services.positions import context, record_signal_outcome, transition

if TYPE_CHECKING:
    from core.services.opening import OpenOutcome

T = PositionTrigger


def record_order_refused(
    session: Session,
    event: EventType,
    position: Position,
    intent: OrderIntent,
    error: errors.ExchangeFailure,
) -> None:
    """An order of the opening the venue refused: which one, and the venue's words and code
    (the entry's refusal and the stop's are read side by side in an incident)."""
    record(
        session,
        event,
        severity=Severity.ERROR,
        ctx=context(position),
        order_id=intent.client_id,
        error=str(error),
        code=error.code,
    )


class RollbackSteps:
    """The ``closing`` (rollback) step of an opening; mixed into ``Opening``."""

    ex: ExchangeAdapter
    executor: Executor
    poll: Poll
    held: HeldLock
    settings: Settings
    now: Callable[[], datetime]

    def _between_transactions(self, session: Session) -> None:
        """End the step's transaction before an exchange call: what the step wrote so far is
        durable, and no connection or row version is held while the venue answers (seconds,
        at worst); the step's next write opens a new transaction on the same session."""
        session.commit()

    def _stop_failed(
        self,
        session: Session,
        position: Position,
        intent: OrderIntent,
        error: errors.ExchangeFailure,
    ) -> None:
        executor.record(session, intent, OrderStatus.REJECTED)
        record_order_refused(session, EventType.STOP_LOSS_FAILED, position, intent, error)
        record(
            session,
            EventType.POSITION_ROLLBACK_STARTED,
            ctx=context(position),
            reason="stop could not be placed",
        )
        transition(
            session,
            position,
            T.STOP_FAILED,
            self.held.token,
            reason="stop could not be placed",
            close_reason="rollback",
        )

    def _roll_back(self, session: Session, position: Position) -> OpenOutcome | None:
        side = Side(position.side)
        self._between_transactions(session)
        if self._position_gone(position.symbol):
            return self._rolled_back(session, position)
        intent = OrderIntent.of(
            position, P.ROLLBACK, side.close_order_side, position.quantity, reduce_only=True
        )
        close_error: errors.ExchangeFailure | None = None
        try:
            # sent by an earlier run (found by its client id): never a second close
            sent = self.executor.send(intent, lookup_first=True, lookup_timeout=0)
            if sent.sent:
                executor.record_result(session, sent)
        except errors.ExchangeFailure as exc:
            close_error = exc
        self._between_transactions(session)
        if close_error is None and self.poll.until(
            lambda: True if self._position_gone(position.symbol) else None
        ):
            return self._rolled_back(session, position)
        return self._emergency_stop(session, position, close_error)

    def _position_gone(self, symbol: str) -> bool:
        return all(p.symbol != symbol for p in self.ex.positions())

    def _rolled_back(self, session: Session, position: Position) -> OpenOutcome:
        self._between_transactions(session)
        trades = self.ex.trades(position.symbol, since=position.created_at)
        exit_ = exit_from_trades(position, trades)
        record(
            session,
            EventType.POSITION_ROLLED_BACK,
            ctx=context(position),
            exit_price=exit_.price,
            quantity=position.quantity,
        )
        finish(
            session,
            position,
            self.held.token,
            trigger=T.ROLLBACK_DONE,
            reason="rollback",
            exit_=exit_,
            now=self.now(),
        )
        record_signal_outcome(session, position, "failed", "stop could not be placed")
        from core.services.opening import OpenOutcome  # the module that mixes this in

        return OpenOutcome.ROLLED_BACK

    def _rollback_failed(
        self, session: Session, position: Position, close_error: errors.ExchangeFailure | None
    ) -> None:
        """Recorded and committed before the emergency stop's exchange calls."""
        record(
            session,
            EventType.ROLLBACK_FAILED,
            ctx=context(position),
            error=str(close_error) if close_error else "still open",
        )
        self._between_transactions(session)

    def _emergency_stop(
        self, session: Session, position: Position, close_error: errors.ExchangeFailure | None
    ) -> OpenOutcome:
        side = Side(position.side)
        self._rollback_failed(session, position, close_error)
        rules = self.ex.rules(position.symbol)
        try:
            mark = self.ex.mark_price(position.symbol)
            raw = price_against(mark, self.settings.emergency_stop_percent, side)
            intent = OrderIntent.of(
                position,
                P.EMERGENCY,
                side.close_order_side,
                position.quantity,
                trigger_price=round_stop_price(raw, rules.tick_size, side),
            )
            sent = self.executor.place_stop(intent, lookup_first=True)
        except errors.ExchangeFailure as exc:
            record(
                session,
                EventType.CRITICAL_ERROR,
                ctx=context(position),
                reason="position open without stop",
                error=str(exc),
            )
            session.commit()
            from core.services.opening import OpeningDeferred

            raise OpeningDeferred(f"position {position.id} unprotected: {exc}") from exc
        executor.record(session, sent.intent, OrderStatus.OPEN, sent.order)
        record(
            session,
            EventType.EMERGENCY_STOP_PLACED,
            ctx=context(position),
            order_id=intent.client_id,
            stop_price=sent.trigger_price,
        )
        transition(
            session,
            position,
            T.CLOSE_FAILED,
            self.held.token,
            severity=Severity.CRITICAL,
            reason="rollback failed; emergency stop",
            stop_price=sent.trigger_price,
            close_reason=None,
            opened_at=self.now(),
        )
        from core.services.opening import OpenOutcome

        return OpenOutcome.EMERGENCY_STOP
