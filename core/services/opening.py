"""The atomic open: entry, fill, stop, or rollback, one durable step at a time.

``pending_entry -> entry_placed -> pending_sl -> active`` (or ``failed`` / ``closing ->
rolled_back``). Each step commits before the next exchange call, so a worker killed anywhere
leaves a status that says exactly what may have happened, and running the same position
again (a redelivered task, or recovery) continues from there:

- An entry is sent at most once per position. After an unconfirmed send the engine only
  looks the order up by its client id; if it never shows up the opening fails, and an entry
  that lands later anyway is adopted and protected by reconciliation. (A 429 is the one
  refusal known not to have executed, so only then is the entry sent again.)
- A stop is looked up by its client id before every placement, so a lost answer never
  makes a second stop.
- If no stop can be placed the entry is closed (reduce-only) and the close verified on the
  exchange; if that fails too, a wide emergency stop is placed and a critical alert raised.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position
from core.domain.halts import OpeningBlock
from core.domain.orders import OrderPurpose as P
from core.domain.orders import OrderStatus
from core.domain.positions import INTERMEDIATE, PositionStatus, PositionTrigger
from core.domain.sides import Side
from core.domain.sizing import size_position, stop_price_for
from core.events import EventType, Severity, record
from core.exchange import errors
from core.exchange.types import OrderSnapshot
from core.locks import HeldLock
from core.polling import Poll
from core.services import executor, halts, symbol_settings, venue_watch
from core.services.closing import PositionRef, holding_position
from core.services.deps import Deps
from core.services.executor import Executor, LookupFailed, OrderIntent, Sent
from core.services.first_band import publish_first_band
from core.services.opening_blocks import filter_halted, pause_openings, paused_key
from core.services.positions import context, order_row, record_signal_outcome, transition
from core.services.rollback import RollbackSteps, record_order_refused
from core.services.trailing_state import start_trailing

S = PositionStatus
T = PositionTrigger


class OpenOutcome(StrEnum):
    ACTIVE = "active"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    EMERGENCY_STOP = "emergency_stop"
    NOTHING_TO_DO = "nothing_to_do"


class OpeningDeferred(errors.Retryable):
    """The opening cannot progress now (exchange busy, fill pending); run it again later."""


def open_position(deps: Deps, position_id: int, *, count_attempt: bool = True) -> OpenOutcome:
    """Drive one opening as far as it can go now, under its symbol's lock.

    ``count_attempt``: a delivered task counts its runs in the database, so a task that kills
    its worker every time (redelivered at once with reject-on-worker-lost) stops after
    ``task_max_attempts`` instead of looping; recovery does not count.
    """
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None:
            return OpenOutcome.NOTHING_TO_DO
        ref = PositionRef.of(position)
        if count_attempt and PositionStatus(position.status) in INTERMEDIATE:
            position.attempts += 1
            if position.attempts > deps.settings.task_max_attempts:
                record(
                    session,
                    EventType.TASK_GAVE_UP,
                    ctx=context(position),
                    attempts=position.attempts,
                    reason="left to recovery",
                )
                return OpenOutcome.NOTHING_TO_DO
    with holding_position(deps, ref) as held:
        return Opening(deps, held, position_id, may_send_entry=count_attempt).drive()


class Opening(RollbackSteps):
    """One position's opening, step by step. A step reads in a transaction, ends it before
    any exchange call (``_between_transactions``: the intent is already durable) and records
    the answer in the next, so no connection or row version is held while the venue
    answers."""

    def __init__(
        self, deps: Deps, held: HeldLock, position_id: int, *, may_send_entry: bool = True
    ) -> None:
        self.deps = deps
        # recovery finishes what was started but never sends a first entry for an opening
        # whose moment has passed
        self.may_send_entry = may_send_entry
        self.ex = deps.exchange
        self.settings = deps.settings
        self.held = held
        self.position_id = position_id
        self.poll = Poll(timeout=deps.settings.entry_fill_timeout)
        self.executor = Executor.of(deps, sleep=self.poll.sleep)

    # --- driver --------------------------------------------------------------------------

    def drive(self) -> OpenOutcome:
        steps: dict[str, Callable[[Session, Position], OpenOutcome | None]] = {
            S.PENDING_ENTRY: self._send_entry,
            S.ENTRY_PLACED: self._await_fill,
            S.PENDING_SL: self._place_stop,
            S.CLOSING: self._roll_back,
        }
        for _ in range(8):  # each step moves the status forward; 8 is more than any path
            with self.deps.unit_of_work() as session:
                position = self._load(session)
                step = steps.get(position.status)
                if step is None or (
                    position.status == S.CLOSING and position.close_reason != "rollback"
                ):
                    return _outcome_of(position)
                self.held.extend()
                outcome = step(session, position)
            if outcome is not None:
                return outcome
        raise OpeningDeferred(f"position {self.position_id}: no progress after 8 steps")

    def _load(self, session: Session) -> Position:
        position = session.get(Position, self.position_id, populate_existing=True)
        assert position is not None
        return position

    def now(self) -> datetime:
        return self.deps.clock.now()

    def settings_for(self, position: Position) -> Settings:
        """The settings of this symbol now: per-symbol overrides over the environment."""
        return symbol_settings.effective(
            self.settings, self.deps.redis, position.exchange, position.symbol
        )

    # --- pending_entry: size and send the entry once --------------------------------------

    def _send_entry(self, session: Session, position: Position) -> OpenOutcome | None:
        cid = entry_intent(position, position.requested_quantity or Decimal(0)).client_id
        ledger = order_row(session, cid)
        if ledger is not None and ledger.status != "rejected":
            # sent before (or maybe sent): never again, only look it up
            self._between_transactions(session)
            found = self.ex.fetch_order(position.symbol, cid)
            if found is None:
                return self._give_up_entry(session, position, "entry sent earlier not found")
            self._entry_sent(session, position, found, cid)
            return None
        if not self.may_send_entry:
            return self._fail(session, position, "interrupted before the entry was sent")
        if self.deps.redis.exists(paused_key(position.exchange)):
            return self._fail(session, position, "openings paused: insufficient funds earlier")
        if halts.block_for(session, position.exchange) is OpeningBlock.HALTED:
            filter_halted(session, position, self.held.token)
            return OpenOutcome.FAILED
        quantity = self._entry_quantity(session, position)
        if isinstance(quantity, OpenOutcome):
            return quantity
        return self._submit_entry(session, position, entry_intent(position, quantity))

    def _entry_quantity(self, session: Session, position: Position) -> Decimal | OpenOutcome:
        """Size from the mark price within the market's rules; set leverage and margin mode."""
        self._between_transactions(session)
        try:
            rules = self.ex.rules(position.symbol)
            mark = self.ex.mark_price(position.symbol)
        except errors.SymbolUnavailable as exc:
            record(session, EventType.SYMBOL_UNAVAILABLE, ctx=context(position), error=str(exc))
            return self._fail(session, position, f"symbol unavailable: {exc}")
        settings = self.settings_for(position)
        sizing = size_position(settings.position_size_usdt, mark, rules, Decimal(settings.leverage))
        if sizing.quantity is None:
            record(
                session,
                EventType.ORDER_BELOW_MINIMUM,
                ctx=context(position),
                reason=sizing.reject,
                detail=sizing.detail,
            )
            return self._fail(session, position, f"sizing: {sizing.detail}")
        try:
            self.ex.ensure_trading_setup(position.symbol, settings.leverage, settings.margin_mode)
        except errors.Permanent as exc:
            venue_watch.note_failure(self.deps, exc)
            return self._fail(session, position, f"leverage/margin setup refused: {exc}")
        return sizing.quantity

    def _submit_entry(
        self, session: Session, position: Position, intent: OrderIntent
    ) -> OpenOutcome | None:
        executor.record(session, intent)
        self._between_transactions(session)  # the intent is durable before the order can exist
        try:
            sent = self.executor.send(intent, lookup_timeout=self.poll.timeout)
        except errors.RateLimited as exc:  # known not to have executed: may be sent again
            executor.record(session, intent, OrderStatus.REJECTED)
            record(
                session,
                EventType.API_RATE_LIMIT_HIT,
                ctx=context(position),
                error=str(exc),
            )
            session.commit()
            raise OpeningDeferred(str(exc)) from exc
        except errors.OutcomeUnknown as exc:
            self._looked_up(session, position, intent, exc, found=False)
            transition(
                session,
                position,
                T.ENTRY_SENT,
                self.held.token,
                reason="entry outcome unknown",
                requested_quantity=intent.quantity,
            )
            session.commit()
            raise OpeningDeferred(f"entry {intent.client_id} outcome unknown") from exc
        except errors.InsufficientFunds as exc:
            pause_openings(self.deps.redis, self.settings, session, position, str(exc))
            return self._fail(session, position, f"insufficient funds: {exc}")
        except errors.Permanent as exc:
            venue_watch.note_failure(self.deps, exc)
            record_order_refused(session, EventType.ENTRY_ORDER_FAILED, position, intent, exc)
            return self._fail(session, position, f"entry refused: {exc}")
        if sent.after_unknown is not None:
            self._looked_up(session, position, intent, sent.after_unknown, found=True)
        self._entry_sent(session, position, sent.order, intent.client_id, requested=intent.quantity)
        return None

    def _looked_up(
        self,
        session: Session,
        position: Position,
        intent: OrderIntent,
        error: Exception,
        *,
        found: bool,
    ) -> None:
        record(
            session,
            EventType.ORDER_LOOKUP_BEFORE_RETRY,
            ctx=context(position),
            order_id=intent.client_id,
            found=found,
            error=str(error),
        )

    def _entry_sent(
        self,
        session: Session,
        position: Position,
        order: OrderSnapshot,
        cid: str,
        requested: Decimal | None = None,
    ) -> None:
        quantity = requested or order.amount
        executor.record(session, entry_intent(position, quantity), OrderStatus.OPEN, order)
        record(
            session,
            EventType.ENTRY_ORDER_PLACED,
            ctx=context(position),
            order_id=cid,
            exchange_order_id=order.id,
            quantity=quantity,
        )
        if position.status == S.PENDING_ENTRY:
            transition(
                session,
                position,
                T.ENTRY_SENT,
                self.held.token,
                requested_quantity=quantity,
            )

    def _give_up_entry(self, session: Session, position: Position, why: str) -> OpenOutcome:
        record(
            session,
            EventType.ENTRY_ORDER_FAILED,
            ctx=context(position),
            reason=why,
        )
        return self._fail(session, position, why, T.ENTRY_NOT_FOUND)

    # --- entry_placed: wait for the fill ---------------------------------------------------

    def _await_fill(self, session: Session, position: Position) -> OpenOutcome | None:
        cid = entry_intent(position, Decimal(0)).client_id
        self._between_transactions(session)

        def filled_or_final() -> OrderSnapshot | None:
            order = self.ex.fetch_order(position.symbol, cid)
            if order is not None and (order.is_filled or order.status != "open"):
                return order
            return None

        order = self.poll.until(filled_or_final)
        if order is None:
            order = self.ex.fetch_order(position.symbol, cid)
            if order is None:
                age = (self.now() - position.updated_at).total_seconds()
                if age < self.settings.intermediate_state_grace_seconds:
                    raise OpeningDeferred(f"entry {cid} not visible yet")
                return self._give_up_entry(session, position, "entry never appeared")
            # still open after the wait: cancel the rest, keep what filled
            self.executor.cancel(position.symbol, order.id)
            order = self.ex.fetch_order(position.symbol, cid) or order
        if order.filled <= 0:
            return self._entry_without_fill(session, position, order)
        partial = order.filled < order.amount
        record(
            session,
            EventType.ENTRY_ORDER_PARTIALLY_FILLED if partial else EventType.ENTRY_ORDER_FILLED,
            ctx=context(position),
            order_id=cid,
            filled=order.filled,
            requested=order.amount,
            average_price=order.average,
        )
        executor.record(
            session,
            entry_intent(position, order.amount),
            OrderStatus.PARTIALLY_FILLED if partial else OrderStatus.FILLED,
            order,
        )
        transition(
            session,
            position,
            T.ENTRY_FILLED,
            self.held.token,
            quantity=order.filled,
            entry_price=order.average or order.price,
            leverage=self.settings_for(position).leverage,
        )
        return None

    def _entry_without_fill(
        self, session: Session, position: Position, order: OrderSnapshot
    ) -> OpenOutcome:
        record(
            session,
            EventType.ENTRY_ORDER_FAILED,
            severity=Severity.INFO,
            ctx=context(position),
            order_id=entry_intent(position, order.amount).client_id,
            status=order.status,
        )
        transition(
            session,
            position,
            T.ENTRY_REJECTED,
            self.held.token,
            reason=f"entry {order.status} without fill",
        )
        record_signal_outcome(session, position, "failed", f"entry {order.status}")
        return OpenOutcome.FAILED

    # --- pending_sl: the stop for the filled quantity, or roll back -------------------------

    def _place_stop(self, session: Session, position: Position) -> OpenOutcome | None:
        """The stop for the filled quantity at the entry-based price, moved beyond the mark
        if the market is already past it (an adopted or late entry); else the rollback."""
        side = Side(position.side)
        assert position.entry_price is not None
        self._between_transactions(session)
        rules = self.ex.rules(position.symbol)
        stop_price = stop_price_for(
            position.entry_price,
            self.settings_for(position).stop_loss_percent,
            side,
            rules.tick_size,
        )
        intent = OrderIntent.of(
            position, P.STOP, side.close_order_side, position.quantity, trigger_price=stop_price
        )
        record(
            session,
            EventType.STOP_LOSS_PLACEMENT_STARTED,
            ctx=context(position),
            order_id=intent.client_id,
            stop_price=stop_price,
            quantity=position.quantity,
        )
        if order_row(session, intent.client_id) is None:
            executor.record(session, intent)
        self._between_transactions(session)  # the intent is durable before the order can exist
        try:
            sent = self.executor.place_stop(
                intent, attempts=self.settings.stop_place_attempts, lookup_first=True
            )
        except LookupFailed:
            raise  # the venue could not say whether the stop exists: ask again later
        except errors.ExchangeFailure as exc:
            self._stop_failed(session, position, intent, exc)
            return None  # the next step rolls the entry back
        return self._activate(session, position, sent)

    def _activate(self, session: Session, position: Position, sent: Sent) -> OpenOutcome:
        trigger = sent.trigger_price
        executor.record(session, sent.intent, OrderStatus.OPEN, sent.order)
        record(
            session,
            EventType.STOP_LOSS_PLACED,
            ctx=context(position),
            order_id=sent.intent.client_id,
            exchange_order_id=sent.order.id,
            stop_price=trigger,
            quantity=position.quantity,
            moved_beyond_mark_from=sent.moved_from,
        )
        transition(
            session,
            position,
            T.STOP_PLACED,
            self.held.token,
            stop_price=trigger,
            opened_at=self.now(),
        )
        row = start_trailing(session, position, self.settings_for(position), self.now())
        record_signal_outcome(session, position, "opened", None)
        self._between_transactions(session)  # the band reads the venue's rules
        publish_first_band(self.deps, position, row)  # trailed from its first tick
        return OpenOutcome.ACTIVE

    def _fail(
        self,
        session: Session,
        position: Position,
        why: str,
        trigger: PositionTrigger = T.ENTRY_REJECTED,
    ) -> OpenOutcome:
        """The opening ends without a position: the position's move and its signal's
        outcome, both saying why."""
        transition(session, position, trigger, self.held.token, reason=why)
        record_signal_outcome(session, position, "failed", why)
        return OpenOutcome.FAILED


def _outcome_of(position: Position) -> OpenOutcome:
    return {
        S.ACTIVE: OpenOutcome.ACTIVE,
        S.FAILED: OpenOutcome.FAILED,
        S.ROLLED_BACK: OpenOutcome.ROLLED_BACK,
    }.get(PositionStatus(position.status), OpenOutcome.NOTHING_TO_DO)


def is_interrupted(status: str) -> bool:
    return PositionStatus(status) in INTERMEDIATE


def entry_intent(position: Position, quantity: Decimal) -> OrderIntent:
    """The position's one entry: its client id is the same for every run of the opening."""
    side = Side(position.side)
    return OrderIntent.of(position, P.ENTRY, side.entry_order_side, quantity)
