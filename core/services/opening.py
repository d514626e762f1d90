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

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position, Signal, TrailingStop
from core.db.session import unit_of_work
from core.domain.halts import OpeningBlock
from core.domain.positions import INTERMEDIATE, PositionStatus, PositionTrigger
from core.domain.sides import Side
from core.domain.sizing import round_stop_price, size_position, stop_price_for
from core.events import EventType, Severity, record
from core.exchange import errors
from core.exchange.client_ids import client_order_id
from core.exchange.types import OrderSnapshot
from core.locks import HeldLock, symbol_lock
from core.logging import bind_correlation
from core.services import halts, symbol_settings, venue_watch
from core.services.closing import exit_from_trades, finish
from core.services.deps import Deps
from core.services.first_band import publish_first_band
from core.services.positions import context, order_row, record_order, transition

S = PositionStatus
T = PositionTrigger
R = TypeVar("R")


class OpenOutcome(StrEnum):
    ACTIVE = "active"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    EMERGENCY_STOP = "emergency_stop"
    NOTHING_TO_DO = "nothing_to_do"


class OpeningDeferred(errors.Retryable):
    """The opening cannot progress now (exchange busy, fill pending); run it again later."""


def paused_key(exchange: str) -> str:
    return f"vigil:openings_paused:{exchange}"


@dataclass
class Poll:
    """Bounded polling with growing intervals, never one long fixed sleep."""

    timeout: float
    first: float = 0.05
    ceiling: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def until(self, probe: Callable[[], R | None]) -> R | None:
        deadline = time.monotonic() + self.timeout
        delay = self.first
        while True:
            result = probe()
            if result is not None or time.monotonic() >= deadline:
                return result
            self.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.ceiling)


def open_position(deps: Deps, position_id: int, *, count_attempt: bool = True) -> OpenOutcome:
    """Drive one opening as far as it can go now, under its symbol's lock.

    ``count_attempt``: a delivered task counts its runs in the database, so a task that kills
    its worker every time (redelivered at once with reject-on-worker-lost) stops after
    ``task_max_attempts`` instead of looping; recovery does not count.
    """
    with unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None:
            return OpenOutcome.NOTHING_TO_DO
        exchange, symbol = position.exchange, position.symbol
        if count_attempt and PositionStatus(position.status) in INTERMEDIATE:
            position.attempts += 1
            if position.attempts > deps.settings.task_max_attempts:
                record(
                    session,
                    EventType.TASK_GAVE_UP,
                    severity=Severity.ERROR,
                    ctx=context(position),
                    attempts=position.attempts,
                    reason="left to recovery",
                )
                return OpenOutcome.NOTHING_TO_DO
        correlation_id = position.correlation_id
    with (
        bind_correlation(correlation_id, position_id=position_id),
        symbol_lock(
            deps.redis,
            exchange,
            symbol,
            token_source=deps.fence_token,
            timeout=deps.settings.lock_timeout,
            ttl=deps.settings.lock_ttl,
            blocking_timeout=deps.settings.lock_blocking_timeout,
        ) as held,
    ):
        return Opening(deps, held, position_id, may_send_entry=count_attempt).drive()


class Opening:
    """One position's opening, step by step; each step is one transaction."""

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

    # --- driver --------------------------------------------------------------------------

    def drive(self) -> OpenOutcome:
        steps: dict[str, Callable[[Session, Position], OpenOutcome | None]] = {
            S.PENDING_ENTRY: self._send_entry,
            S.ENTRY_PLACED: self._await_fill,
            S.PENDING_SL: self._place_stop,
            S.CLOSING: self._roll_back,
        }
        for _ in range(8):  # each step moves the status forward; 8 is more than any path
            with unit_of_work() as session:
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
        cid = client_order_id(position.id, position.correlation_id, "entry")
        ledger = order_row(session, cid)
        if ledger is not None and ledger.status != "rejected":
            # sent before (or maybe sent): never again, only look it up
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
            return self._halted(session, position)
        quantity = self._entry_quantity(session, position)
        if isinstance(quantity, OpenOutcome):
            return quantity
        return self._submit_entry(session, position, cid, quantity)

    def _entry_quantity(self, session: Session, position: Position) -> Decimal | OpenOutcome:
        """Size from the mark price within the market's rules; set leverage and margin mode."""
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
        self, session: Session, position: Position, cid: str, quantity: Decimal
    ) -> OpenOutcome | None:
        side = Side(position.side)
        self._ledger(session, position, cid, "entry", side.entry_order_side, quantity, "intent")
        session.commit()  # the intent is durable before the order can exist
        try:
            order = self.ex.create_market_order(
                position.symbol, side.entry_order_side, quantity, cid
            )
        except errors.RateLimited as exc:
            self._ledger(
                session, position, cid, "entry", side.entry_order_side, quantity, "rejected"
            )
            record(
                session,
                EventType.API_RATE_LIMIT_HIT,
                severity=Severity.WARNING,
                ctx=context(position),
                error=str(exc),
            )
            session.commit()
            raise OpeningDeferred(str(exc)) from exc
        except errors.OutcomeUnknown as exc:
            found = self.poll.until(lambda: self.ex.fetch_order(position.symbol, cid))
            record(
                session,
                EventType.ORDER_LOOKUP_BEFORE_RETRY,
                severity=Severity.WARNING,
                ctx=context(position),
                order_id=cid,
                found=found is not None,
                error=str(exc),
            )
            if found is None:
                transition(
                    session,
                    position,
                    T.ENTRY_SENT,
                    self.held.token,
                    reason="entry outcome unknown",
                    requested_quantity=quantity,
                )
                session.commit()
                raise OpeningDeferred(f"entry {cid} outcome unknown") from exc
            order = found
        except errors.InsufficientFunds as exc:
            self._pause_openings(session, position, str(exc))
            return self._fail(session, position, f"insufficient funds: {exc}")
        except errors.Permanent as exc:
            venue_watch.note_failure(self.deps, exc)
            record(
                session,
                EventType.ENTRY_ORDER_FAILED,
                severity=Severity.ERROR,
                ctx=context(position),
                order_id=cid,
                error=str(exc),
                code=exc.code,
            )
            return self._fail(session, position, f"entry refused: {exc}")
        self._entry_sent(session, position, order, cid, requested=quantity)
        return None

    def _entry_sent(
        self,
        session: Session,
        position: Position,
        order: OrderSnapshot,
        cid: str,
        requested: Decimal | None = None,
    ) -> None:
        side = Side(position.side)
        self._ledger(
            session,
            position,
            cid,
            "entry",
            side.entry_order_side,
            requested or order.amount,
            "open",
            order=order,
        )
        record(
            session,
            EventType.ENTRY_ORDER_PLACED,
            ctx=context(position),
            order_id=cid,
            exchange_order_id=order.id,
            quantity=requested or order.amount,
        )
        if position.status == S.PENDING_ENTRY:
            transition(
                session,
                position,
                T.ENTRY_SENT,
                self.held.token,
                requested_quantity=requested or order.amount,
            )

    def _give_up_entry(self, session: Session, position: Position, why: str) -> OpenOutcome:
        record(
            session,
            EventType.ENTRY_ORDER_FAILED,
            severity=Severity.WARNING,
            ctx=context(position),
            reason=why,
        )
        transition(session, position, T.ENTRY_NOT_FOUND, self.held.token, reason=why)
        self._signal_outcome(session, position, "failed", why)
        return OpenOutcome.FAILED

    # --- entry_placed: wait for the fill ---------------------------------------------------

    def _await_fill(self, session: Session, position: Position) -> OpenOutcome | None:
        cid = client_order_id(position.id, position.correlation_id, "entry")

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
            self.ex.cancel_order(position.symbol, order.id)
            order = self.ex.fetch_order(position.symbol, cid) or order
        if order.filled <= 0:
            record(
                session,
                EventType.ENTRY_ORDER_FAILED,
                ctx=context(position),
                order_id=cid,
                status=order.status,
            )
            transition(
                session,
                position,
                T.ENTRY_REJECTED,
                self.held.token,
                reason=f"entry {order.status} without fill",
            )
            self._signal_outcome(session, position, "failed", f"entry {order.status}")
            return OpenOutcome.FAILED
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
        self._ledger(
            session,
            position,
            cid,
            "entry",
            Side(position.side).entry_order_side,
            order.amount,
            "partially_filled" if partial else "filled",
            order=order,
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

    # --- pending_sl: the stop for the filled quantity, or roll back -------------------------

    def _place_stop(self, session: Session, position: Position) -> OpenOutcome | None:
        side = Side(position.side)
        cid = client_order_id(position.id, position.correlation_id, "stop")
        assert position.entry_price is not None
        rules = self.ex.rules(position.symbol)
        stop_price = stop_price_for(
            position.entry_price,
            self.settings_for(position).stop_loss_percent,
            side,
            rules.tick_size,
        )
        record(
            session,
            EventType.STOP_LOSS_PLACEMENT_STARTED,
            ctx=context(position),
            order_id=cid,
            stop_price=stop_price,
            quantity=position.quantity,
        )
        last_error: errors.ExchangeFailure | None = None
        for attempt in range(1, self.settings.stop_place_attempts + 1):
            stop = self.ex.fetch_order(position.symbol, cid, conditional=True)
            if stop is not None and stop.is_open:
                return self._activate(session, position, stop, cid)
            try:
                stop = self.ex.create_stop(
                    position.symbol, side.close_order_side, position.quantity, stop_price, cid
                )
                return self._activate(session, position, stop, cid)
            except errors.Retryable as exc:  # incl. unknown outcome: the lookup comes first
                last_error = exc
                self.poll.sleep(min(0.2 * attempt, 1.0))
            except errors.Permanent as exc:
                last_error = exc
                break
        record(
            session,
            EventType.STOP_LOSS_FAILED,
            severity=Severity.ERROR,
            ctx=context(position),
            order_id=cid,
            error=str(last_error),
            code=getattr(last_error, "code", None),
        )
        record(
            session,
            EventType.POSITION_ROLLBACK_STARTED,
            severity=Severity.WARNING,
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
        return None

    def _activate(
        self, session: Session, position: Position, stop: OrderSnapshot, cid: str
    ) -> OpenOutcome:
        side = Side(position.side)
        trigger = stop.trigger_price
        self._ledger(
            session,
            position,
            cid,
            "stop",
            side.close_order_side,
            position.quantity,
            "open",
            order=stop,
            trigger_price=trigger,
            reduce_only=True,
        )
        record(
            session,
            EventType.STOP_LOSS_PLACED,
            ctx=context(position),
            order_id=cid,
            exchange_order_id=stop.id,
            stop_price=trigger,
            quantity=position.quantity,
        )
        transition(
            session,
            position,
            T.STOP_PLACED,
            self.held.token,
            stop_price=trigger,
            opened_at=self.now(),
        )
        self._create_trailing(session, position)
        self._signal_outcome(session, position, "opened", None)
        return OpenOutcome.ACTIVE

    def _create_trailing(self, session: Session, position: Position) -> None:
        assert position.entry_price is not None
        pct = self.settings_for(position).trailing_activation_percent / Decimal(100)
        factor = Decimal(1) + pct if position.side == Side.LONG else Decimal(1) - pct
        activation = position.entry_price * factor
        row = TrailingStop(
            position_id=position.id,
            state="inactive",
            owner="trailing",
            highest_price=position.entry_price,
            lowest_price=position.entry_price,
            current_stop=position.stop_price,
            activation_price=activation,
            heartbeat_at=self.now(),
            breakeven_done=False,
            update_count=0,
        )
        session.add(row)
        publish_first_band(self.deps, position, row)  # trailed from its first tick
        record(
            session,
            EventType.TRAILING_STOP_CREATED,
            ctx=context(position),
            entry_price=position.entry_price,
            activation_price=activation,
            stop_price=position.stop_price,
        )

    # --- closing (rollback): close, verify, or protect with an emergency stop ---------------

    def _roll_back(self, session: Session, position: Position) -> OpenOutcome | None:
        side = Side(position.side)
        if self._position_gone(position.symbol):
            return self._rolled_back(session, position)
        cid = client_order_id(position.id, position.correlation_id, "rollback")
        close_error: errors.ExchangeFailure | None = None
        try:
            existing = self.ex.fetch_order(position.symbol, cid)
            if existing is None:
                order = self.ex.create_market_order(
                    position.symbol, side.close_order_side, position.quantity, cid, reduce_only=True
                )
                self._ledger(
                    session,
                    position,
                    cid,
                    "rollback",
                    side.close_order_side,
                    position.quantity,
                    "filled" if order.is_filled else "open",
                    order=order,
                    reduce_only=True,
                )
        except errors.ExchangeFailure as exc:
            close_error = exc
        if close_error is None and self.poll.until(
            lambda: True if self._position_gone(position.symbol) else None
        ):
            return self._rolled_back(session, position)
        return self._emergency_stop(session, position, close_error)

    def _position_gone(self, symbol: str) -> bool:
        return all(p.symbol != symbol for p in self.ex.positions())

    def _rolled_back(self, session: Session, position: Position) -> OpenOutcome:
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
        self._signal_outcome(session, position, "failed", "stop could not be placed")
        return OpenOutcome.ROLLED_BACK

    def _emergency_stop(
        self, session: Session, position: Position, close_error: errors.ExchangeFailure | None
    ) -> OpenOutcome:
        side = Side(position.side)
        record(
            session,
            EventType.ROLLBACK_FAILED,
            severity=Severity.CRITICAL,
            ctx=context(position),
            error=str(close_error) if close_error else "still open",
        )
        cid = client_order_id(position.id, position.correlation_id, "emergency")
        rules = self.ex.rules(position.symbol)
        try:
            mark = self.ex.mark_price(position.symbol)
            pct = self.settings.emergency_stop_percent / Decimal(100)
            raw = mark * (Decimal(1) - pct if side is Side.LONG else Decimal(1) + pct)
            price = round_stop_price(raw, rules.tick_size, side)
            stop = self.ex.fetch_order(position.symbol, cid, conditional=True)
            if stop is None or not stop.is_open:
                stop = self.ex.create_stop(
                    position.symbol, side.close_order_side, position.quantity, price, cid
                )
        except errors.ExchangeFailure as exc:
            record(
                session,
                EventType.CRITICAL_ERROR,
                severity=Severity.CRITICAL,
                ctx=context(position),
                reason="position open without stop",
                error=str(exc),
            )
            session.commit()
            raise OpeningDeferred(f"position {position.id} unprotected: {exc}") from exc
        self._ledger(
            session,
            position,
            cid,
            "emergency",
            side.close_order_side,
            position.quantity,
            "open",
            order=stop,
            trigger_price=stop.trigger_price,
            reduce_only=True,
        )
        record(
            session,
            EventType.EMERGENCY_STOP_PLACED,
            severity=Severity.CRITICAL,
            ctx=context(position),
            order_id=cid,
            stop_price=stop.trigger_price,
        )
        transition(
            session,
            position,
            T.CLOSE_FAILED,
            self.held.token,
            severity=Severity.CRITICAL,
            reason="rollback failed; emergency stop",
            stop_price=stop.trigger_price,
            close_reason=None,
            opened_at=self.now(),
        )
        return OpenOutcome.EMERGENCY_STOP

    # --- helpers ------------------------------------------------------------------------

    def _fail(self, session: Session, position: Position, why: str) -> OpenOutcome:
        transition(session, position, T.ENTRY_REJECTED, self.held.token, reason=why)
        self._signal_outcome(session, position, "failed", why)
        return OpenOutcome.FAILED

    def _halted(self, session: Session, position: Position) -> OpenOutcome:
        """A halt came between the wave's start of this opening and its entry: nothing was
        sent, so the signal is filtered (reason ``halted``) like the wave's other candidates."""
        why = "halted: openings halted before the entry was sent"
        transition(session, position, T.ENTRY_REJECTED, self.held.token, reason=why)
        signal = session.get(Signal, position.signal_id) if position.signal_id else None
        if signal is not None:
            signal.status, signal.outcome_reason = "filtered", why
            record(
                session,
                EventType.SIGNAL_FILTERED,
                ctx=context(position),
                signal_id=signal.signal_id,
                wave_id=signal.wave_id,
                reason="halted",
                detail=why,
            )
        return OpenOutcome.FAILED

    def _pause_openings(self, session: Session, position: Position, why: str) -> None:
        seconds = self.settings.openings_pause_seconds
        self.deps.redis.set(paused_key(position.exchange), why[:200], ex=seconds)
        record(
            session,
            EventType.INSUFFICIENT_FUNDS,
            severity=Severity.CRITICAL,
            ctx=context(position),
            error=why,
        )
        record(
            session,
            EventType.OPENINGS_PAUSED,
            severity=Severity.WARNING,
            ctx=context(position),
            seconds=seconds,
        )

    def _signal_outcome(
        self, session: Session, position: Position, status: str, reason: str | None
    ) -> None:
        if position.signal_id is None:
            return
        signal = session.get(Signal, position.signal_id)
        if signal is None:
            return
        signal.status = status
        signal.outcome_reason = reason
        record(
            session,
            EventType.SIGNAL_EXECUTED if status == "opened" else EventType.SIGNAL_FAILED,
            severity=Severity.INFO if status == "opened" else Severity.WARNING,
            ctx=context(position),
            signal_id=signal.signal_id,
            reason=reason,
        )

    def _ledger(
        self,
        session: Session,
        position: Position,
        cid: str,
        purpose: str,
        side: str,
        quantity: Decimal,
        status: str,
        *,
        order: OrderSnapshot | None = None,
        trigger_price: Decimal | None = None,
        reduce_only: bool = False,
    ) -> None:
        record_order(
            session,
            position,
            exchange=position.exchange,
            symbol=position.symbol,
            client_order_id=cid,
            purpose=purpose,
            side=str(side),
            order_type="stop_market" if purpose in ("stop", "emergency") else "market",
            quantity=quantity,
            status=status,
            exchange_order_id=order.id if order else None,
            trigger_price=trigger_price,
            reduce_only=reduce_only,
            filled_quantity=order.filled if order else None,
            average_price=order.average if order else None,
        )


def _outcome_of(position: Position) -> OpenOutcome:
    return {
        S.ACTIVE: OpenOutcome.ACTIVE,
        S.FAILED: OpenOutcome.FAILED,
        S.ROLLED_BACK: OpenOutcome.ROLLED_BACK,
    }.get(PositionStatus(position.status), OpenOutcome.NOTHING_TO_DO)


def is_interrupted(status: str) -> bool:
    return PositionStatus(status) in INTERMEDIATE
