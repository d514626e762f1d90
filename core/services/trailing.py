"""Smart trailing stop service: load -> decide -> make before break -> record.

Why it is shaped this way (seeds/001 §3, seeds/000):

- The old bot cancelled the old stop and then placed the new one, so a fast market could
  hit a position with no stop at all. Here a move **places the new reduce-only stop first**
  and cancels the old one only after the exchange accepted the new one. If the placement
  fails, the old stop stays and the failure is an event; if the cancel fails, both stops
  stay (reduce-only makes the overlap harmless) and the old one is left, still ``open`` in
  the ledger, to the next move or the zombie cleaner's surplus rule.
- The old bot kept the state in memory. Here it lives in ``trailing_stops`` and is written
  only after the exchange accepted the new stop, so a restart resumes with the same
  highest/lowest price and current stop; nothing in this module survives between calls.
- The decision is ``core.domain.trailing.decide`` (pure); this module maps rows to its
  state, acts on its answer and writes one event per decision (activated, updated with old
  and new stop, breakeven, rate limited, update failed, reclaimed).
- Idempotency: each move has its own client id ``client_order_id(pid, corr, "stop", seq)``
  (seq 0 is the opening stop). The intent row is committed before the order is sent; a
  later run that finds an unfinished intent looks the order up by that client id before
  sending anything, so a lost answer or a killed worker never leaves two stops of one move.
  A fresh seq needs no lookup: the id has never been sent, which its missing intent proves.
- Ownership (shared rule with protection, see ``core.domain.protection``): the stop is moved
  only while ``owner`` is ``trailing``; when protection owns it, trailing takes it back
  (event) at its next move, and only if a full stop is live on the exchange. ``heartbeat_at``
  is refreshed every time the price path processes the position: it says "trailing is
  watching", and protection takes over a stop whose heartbeat went stale.

Every function here runs under the symbol lock (the price path holds it) and opens its own
transactions; exchange calls happen between transactions, never inside one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.domain.orders import covers, stops_for
from core.domain.positions import TERMINAL, PositionStatus
from core.domain.sides import Side
from core.domain.trailing import (
    PriceWindow,
    TrailingAction,
    TrailingDecision,
    TrailingParams,
    TrailingState,
    band,
    decide,
)
from core.events import EventType, Severity, record
from core.exchange import errors
from core.exchange.client_ids import client_order_id, parse_client_id
from core.exchange.types import OrderSnapshot
from core.locks import HeldLock, fenced_update
from core.services import bands, symbol_settings
from core.services.closing import settle_external_close
from core.services.deps import Deps
from core.services.opening import Poll
from core.services.positions import context, record_order
from core.services.stop_fill import ensure_stop_triggered_event

log = logging.getLogger(__name__)

OWNER_TRAILING = "trailing"
OWNER_PROTECTION = "protection"
BAND_COMPONENT = "trailing"
# Ledger purposes of the orders that protect a position: the opening stop and trailing's
# moves ("stop"), protection's replacement, the rollback's emergency stop.
STOP_PURPOSES = ("stop", "protection", "emergency")
_LEDGER_STATUS = {"open": "open", "closed": "filled", "canceled": "cancelled"}


def trailing_params(settings: Settings) -> TrailingParams:
    """The domain's parameters from the operator's settings."""
    minutes = settings.trailing_time_activation_minutes
    return TrailingParams(
        activation_pct=settings.trailing_activation_percent,
        callback_pct=settings.trailing_callback_percent,
        breakeven_at_pct=settings.trailing_breakeven_percent,
        taker_fee_pct=settings.taker_fee_percent,
        time_activation_after=timedelta(minutes=minutes) if minutes else None,
        time_activation_min_profit_pct=settings.trailing_time_activation_min_profit_percent,
        min_step_pct=settings.trailing_min_step_percent,
        min_update_interval=timedelta(seconds=settings.trailing_min_update_interval),
        min_distance_pct=settings.trailing_min_distance_percent,
    )


def state_of(row: TrailingStop, position: Position) -> TrailingState:
    """The durable row (plus the position's side, entry, size, age) as the domain's state."""
    entry = position.entry_price
    assert entry is not None, f"position {position.id} is active without an entry price"
    return TrailingState(
        side=Side(position.side),
        entry_price=entry,
        quantity=position.quantity,
        opened_at=position.opened_at or position.created_at,
        activation_price=row.activation_price or entry,
        highest_price=row.highest_price or entry,
        lowest_price=row.lowest_price or entry,
        stop_price=row.current_stop if row.current_stop is not None else position.stop_price,
        activated=row.state == "active",
        activated_at=row.activated_at,
        breakeven_triggered=row.breakeven_done,
        update_count=row.update_count,
        last_update_at=row.last_update_at,
        pending_stop=row.pending_stop,
    )


def _store(row: TrailingStop, state: TrailingState) -> None:
    row.state = "active" if state.activated else "inactive"
    row.activated_at = state.activated_at
    row.highest_price = state.highest_price
    row.lowest_price = state.lowest_price
    row.current_stop = state.stop_price
    row.breakeven_done = state.breakeven_triggered
    row.update_count = state.update_count
    row.last_update_at = state.last_update_at
    row.pending_stop = state.pending_stop


def _load(session: Session, position_id: int) -> tuple[Position, TrailingStop] | None:
    """The active position and its trailing row, fresh, in one query; None otherwise."""
    found = session.execute(
        select(Position, TrailingStop)
        .join(TrailingStop, TrailingStop.position_id == Position.id)
        .where(Position.id == position_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if found is None:
        return None
    position, row = found
    if position.status != PositionStatus.ACTIVE or position.entry_price is None:
        return None
    return position, row


# --- the price path's reaction ----------------------------------------------------------


def react(
    deps: Deps, held: HeldLock, position: Position, window: PriceWindow, now: datetime
) -> bool:
    """Advance the position's trailing stop by one coalesced price window (REACTIONS).

    Ends by publishing the band the ingest compares the next ticks with, computed from the
    state this decision left in the database (withdrawn when there is nothing to trail).
    Moves the stop, never closes the position: returns False.
    """
    trailer = _Trailer(deps, held, position.id, now)
    trailer.advance(window)
    found = trailer.band()
    bands.publish(deps.redis, position.exchange, position.symbol, BAND_COMPONENT, found)
    return False


@dataclass(frozen=True)
class _Intent:
    client_id: str
    maybe_sent: bool  # an earlier run committed this intent: the order may exist
    # the position's other open stops (client id, exchange id): what the break step cancels
    old: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class _Cancel:
    client_id: str
    exchange_id: str | None
    failure: errors.ExchangeFailure | None


class _Trailer:
    """One decision for one position, under the symbol lock held by the caller.

    Transactions of a move: (1) load, decide, heartbeat, intent (and the old stops); the new
    stop is sent, then the old ones cancelled; (2) accepted: ledger, state, position's stop,
    events. A decision without an order is transaction (1) only.
    """

    # the position as loaded by ``advance`` (read-only for the rest of the decision)
    symbol: str
    side: Side
    quantity: Decimal
    tick: Decimal

    def __init__(self, deps: Deps, held: HeldLock, position_id: int, now: datetime) -> None:
        self.deps = deps
        self.ex = deps.exchange
        self.held = held
        self.position_id = position_id
        self.now = now
        self.params = trailing_params(deps.settings)
        # the state as last written to the row (None: no active trailing position)
        self.persisted: TrailingState | None = None

    def band(self) -> PriceBand | None:
        if self.persisted is None:
            return None
        return band(self.persisted, self.params, self.now, self.tick)

    def advance(self, window: PriceWindow) -> None:
        with unit_of_work() as session:
            loaded = _load(session, self.position_id)
            if loaded is None:
                return
            position, row = loaded
            self.symbol = position.symbol
            self.params = trailing_params(
                symbol_settings.effective(
                    self.deps.settings, self.deps.redis, position.exchange, position.symbol
                )
            )
            self.side = Side(position.side)
            self.quantity = position.quantity
            self.tick = self.ex.rules(position.symbol).tick_size
            row.heartbeat_at = self.now  # trailing is watching this position
            current = state_of(row, position)
            self.persisted = current
            decision = decide(current, window, self.now, self.params, self.tick)
            if not decision.send:
                log.debug(
                    "trailing %s: %s (window %s..%s last %s, stop %s, ticks %s)",
                    self.symbol,
                    decision.reason,
                    window.low,
                    window.high,
                    window.last,
                    current.stop_price,
                    getattr(window, "ticks", None),
                )
                _store(row, decision.state)
                self.persisted = decision.state
                for action in decision.events:
                    self._record_event(session, position, decision, action, window)
                return
            owned = row.owner == OWNER_TRAILING
            intent = self._intent(session, position, decision) if owned else None
        if intent is None:
            if not self._reclaim(decision):
                return
            with unit_of_work() as session:
                loaded = _load(session, self.position_id)
                assert loaded is not None
                intent = self._intent(session, loaded[0], decision)
        self._move(decision, window, intent)

    def _record_event(
        self,
        session: Session,
        position: Position,
        decision: TrailingDecision,
        action: TrailingAction,
        window: PriceWindow,
    ) -> None:
        state = decision.state
        ctx = context(position)
        if action is TrailingAction.ACTIVATE:
            record(
                session,
                EventType.TRAILING_STOP_ACTIVATED,
                ctx=ctx,
                activation_price=state.activation_price,
                highest_price=state.highest_price,
                lowest_price=state.lowest_price,
                last_price=window.last,
                reason=decision.reason,
            )
        elif action is TrailingAction.BREAKEVEN:
            record(session, EventType.TRAILING_STOP_BREAKEVEN, ctx=ctx, reason=decision.reason)
        elif action is TrailingAction.DEFERRED:
            record(
                session,
                EventType.TRAILING_STOP_RATE_LIMITED,
                ctx=ctx,
                stop_price=decision.old_stop,
                wanted_stop=state.pending_stop,
                retry_at=decision.retry_at,
            )

    # --- ownership ------------------------------------------------------------------------

    def _reclaim(self, decision: TrailingDecision) -> bool:
        """Take the stop back from protection, if a full stop is live; else leave it there."""
        self.held.extend()
        try:
            orders = self.ex.open_orders(self.symbol)
        except errors.ExchangeFailure as exc:
            self._failed(decision, exc, stage="reclaim")
            return False
        live = stops_for(None, [o.to_domain() for o in orders], symbol=self.symbol, side=self.side)
        if not any(covers(o, self.quantity) for o in live):
            self._failed(decision, None, stage="reclaim", reason="protection owns the stop")
            return False
        with unit_of_work() as session:
            loaded = _load(session, self.position_id)
            if loaded is None:
                return False
            position, row = loaded
            row.owner = OWNER_TRAILING
            for order in live:
                ours = parse_client_id(order.client_id)
                if order.client_id and ours is not None and ours.position_id == position.id:
                    # listed as open so the move's break step cancels it
                    self._ledger(
                        session,
                        position,
                        order.client_id,
                        ours.purpose,
                        order.id,
                        trigger=order.trigger_price,
                    )
            record(
                session,
                EventType.TRAILING_STOP_RECLAIMED,
                ctx=context(position),
                from_owner=OWNER_PROTECTION,
                live_stops=[o.client_id or o.id for o in live],
            )
        return True

    # --- make before break ----------------------------------------------------------------

    def _intent(self, session: Session, position: Position, decision: TrailingDecision) -> _Intent:
        """The client id of this move, durable (with the decision's commit) before the order
        can exist. An unfinished intent of an earlier run is reused, never a new seq."""
        assert decision.new_stop is not None
        rows = session.execute(
            select(
                Order.client_order_id, Order.status, Order.purpose, Order.exchange_order_id
            ).where(Order.position_id == position.id, Order.purpose.in_(STOP_PURPOSES))
        ).all()
        seqs = {
            parsed.seq: (cid, status)
            for cid, status, purpose, _ in rows
            if purpose == "stop" and (parsed := parse_client_id(cid)) is not None
        }
        if seqs and seqs[max(seqs)][1] == "intent":
            cid, maybe_sent = seqs[max(seqs)][0], True
        else:
            seq = max(seqs, default=0) + 1
            cid = client_order_id(position.id, position.correlation_id, "stop", seq)
            self._ledger(
                session, position, cid, "stop", None, status="intent", trigger=decision.new_stop
            )
            maybe_sent = False
        old = tuple((c, eid) for c, status, _, eid in rows if status == "open" and c != cid)
        return _Intent(cid, maybe_sent, old)

    def _move(self, decision: TrailingDecision, window: PriceWindow, intent: _Intent) -> None:
        assert decision.new_stop is not None
        stop: OrderSnapshot | None = None
        for _ in range(3):  # an intent whose order died on the exchange gives way to the next
            if not intent.maybe_sent:
                break
            found = self._lookup(intent.client_id)
            if found is None:
                break  # never landed: send it (same client id, so a late landing is refused)
            if found.is_open:
                stop = found
                break
            if found.is_filled:
                self._stop_already_filled(intent.client_id, found)
                return
            intent = self._next_intent(intent.client_id, found, decision)
        if stop is None:
            stop = self._place(decision, intent.client_id)
            if stop is None:
                return
        cancels = self._cancel_old(intent.old)  # break, only now that the new stop is live
        self._accepted(decision, stop, intent.client_id, window, cancels)

    def _next_intent(
        self, client_id: str, order: OrderSnapshot, decision: TrailingDecision
    ) -> _Intent:
        """The earlier intent's order is gone (cancelled, expired): close it, take a new seq."""
        with unit_of_work() as session:
            _set_ledger_status(session, client_id, _LEDGER_STATUS.get(order.status, "expired"))
            loaded = _load(session, self.position_id)
            assert loaded is not None
            return self._intent(session, loaded[0], decision)

    def _lookup(self, client_id: str) -> OrderSnapshot | None:
        try:
            return self.ex.fetch_order(self.symbol, client_id, conditional=True)
        except errors.Retryable:
            return None  # cannot tell: the send below reuses the client id, never a second one

    def _place(self, decision: TrailingDecision, client_id: str) -> OrderSnapshot | None:
        """Send the new stop; on failure the old stop stays and the failure is recorded."""
        assert decision.new_stop is not None
        self.held.extend()  # a full TTL for the move: send, a lookup, the old stops' cancel
        try:
            return self.ex.create_stop(
                self.symbol, self.side.close_order_side, self.quantity, decision.new_stop, client_id
            )
        except errors.OutcomeUnknown as exc:
            found = Poll(timeout=2.0).until(lambda: self._lookup(client_id))
            if found is not None and found.is_open:
                return found
            self._failed(decision, exc, stage="place")
        except errors.ExchangeFailure as exc:
            self._failed(decision, exc, stage="place")
        return None

    def _cancel_old(self, old: tuple[tuple[str, str | None], ...]) -> list[_Cancel]:
        """Break: cancel the position's other open stops; a failure leaves that one live."""
        done: list[_Cancel] = []
        for cid, exchange_id in old:
            try:
                if exchange_id is None:
                    found = self.ex.fetch_order(self.symbol, cid, conditional=True)
                    exchange_id = found.id if found is not None and found.is_open else None
                if exchange_id is not None:
                    self.ex.cancel_order(self.symbol, exchange_id, conditional=True)
                done.append(_Cancel(cid, exchange_id, None))
            except errors.ExchangeFailure as exc:
                done.append(_Cancel(cid, exchange_id, exc))
        return done

    def _accepted(
        self,
        decision: TrailingDecision,
        stop: OrderSnapshot,
        client_id: str,
        window: PriceWindow,
        cancels: list[_Cancel],
    ) -> None:
        """The new stop is live: now, and only now, the new state is written, together with
        the break step's outcome (an old stop that could not be cancelled stays ``open`` in
        the ledger, with an event: the next move or the zombie cleaner removes it).

        A worker that dies before this commit leaves the intent: the next run looks the new
        stop up by its client id and adopts it; an old stop already cancelled then counts as
        gone.
        """
        live_price = stop.trigger_price or decision.new_stop
        state = replace(decision.state, stop_price=live_price)
        tick_at = getattr(window, "first_tick_at", None)
        with unit_of_work() as session:
            loaded = _load(session, self.position_id)
            if loaded is None:
                return  # closed meanwhile (not under the lock; kept for safety)
            position, row = loaded
            ledger = session.scalars(
                select(Order).where(Order.client_order_id == client_id)
            ).one_or_none()
            if ledger is None:
                self._ledger(session, position, client_id, "stop", stop.id, trigger=live_price)
            else:
                ledger.status, ledger.exchange_order_id = "open", stop.id
                ledger.trigger_price = live_price
            _store(row, state)
            row.heartbeat_at = self.now
            # fenced, and only this write (the ORM object is not touched: no second UPDATE)
            fenced_update(session, position.id, self.held.token, stop_price=live_price)
            for action in decision.events:
                if action is not TrailingAction.MOVE_STOP:
                    self._record_event(session, position, decision, action, window)
            record(
                session,
                EventType.TRAILING_STOP_UPDATED,
                ctx=context(position),
                order_id=client_id,
                exchange_order_id=stop.id,
                old_stop=decision.old_stop,
                new_stop=live_price,
                update_count=state.update_count,
                highest_price=state.highest_price,
                lowest_price=state.lowest_price,
                last_price=window.last,
                tick_at=tick_at,
            )
            cancelled = [c.client_id for c in cancels if c.failure is None]
            if cancelled:
                session.execute(
                    sa_update(Order)
                    .where(Order.client_order_id.in_(cancelled))
                    .values(status="cancelled")
                )
            for c in cancels:
                if c.failure is not None:
                    record(
                        session,
                        EventType.TRAILING_OLD_STOP_CANCEL_FAILED,
                        severity=Severity.WARNING,
                        ctx=context(position),
                        order_id=c.client_id,
                        exchange_order_id=c.exchange_id,
                        kept_stop=client_id,
                        error=str(c.failure),
                        code=c.failure.code,
                    )
        self.persisted = state
        if tick_at is not None:
            _observe_tick_to_order((self.deps.clock.now() - tick_at).total_seconds())

    # --- outcomes -------------------------------------------------------------------------

    def _failed(
        self,
        decision: TrailingDecision,
        failure: errors.ExchangeFailure | None,
        *,
        stage: str,
        reason: str | None = None,
    ) -> None:
        """The old stop stays. Back off like a sent move would: next try after the interval."""
        with unit_of_work() as session:
            loaded = _load(session, self.position_id)
            if loaded is None:
                return
            position, row = loaded
            row.highest_price = decision.state.highest_price
            row.lowest_price = decision.state.lowest_price
            row.last_update_at = self.now
            row.pending_stop = decision.new_stop
            row.heartbeat_at = self.now
            self.persisted = state_of(row, position)
            if isinstance(failure, errors.RateLimited):
                record(
                    session,
                    EventType.API_RATE_LIMIT_HIT,
                    severity=Severity.WARNING,
                    ctx=context(position),
                    error=str(failure),
                )
            record(
                session,
                EventType.TRAILING_STOP_UPDATE_FAILED,
                severity=Severity.WARNING if failure is None else Severity.ERROR,
                ctx=context(position),
                stage=stage,
                stop_price=decision.old_stop,
                wanted_stop=decision.new_stop,
                reason=reason or type(failure).__name__,
                error=str(failure) if failure is not None else None,
                code=failure.code if failure is not None else None,
                owner=row.owner,
            )

    def _stop_already_filled(self, client_id: str, order: OrderSnapshot) -> None:
        """A stop of this move fired before we saw it: the close path settles the position."""
        with unit_of_work() as session:
            _set_ledger_status(session, client_id, "filled")
            position = session.get(Position, self.position_id)
            assert position is not None
            record(
                session,
                EventType.STOP_TRIGGERED,
                ctx=context(position),
                order_id=client_id,
                exchange_order_id=order.id,
                average_price=order.average,
            )

    def _ledger(
        self,
        session: Session,
        position: Position,
        client_id: str,
        purpose: str,
        exchange_order_id: str | None,
        *,
        status: str = "open",
        trigger: Decimal | None = None,
    ) -> None:
        record_order(
            session,
            position,
            exchange=position.exchange,
            symbol=position.symbol,
            client_order_id=client_id,
            purpose=purpose,
            side=self.side.close_order_side.value,
            order_type="stop_market",
            quantity=position.quantity,
            status=status,
            exchange_order_id=exchange_order_id,
            trigger_price=trigger,
            reduce_only=True,
        )


def _set_ledger_status(session: Session, client_id: str, status: str) -> None:
    session.execute(
        sa_update(Order).where(Order.client_order_id == client_id).values(status=status)
    )


def _observe_tick_to_order(seconds: float) -> None:
    """Feed the tick-to-order histogram when the metrics module is installed."""
    try:
        from core.metrics import observe_tick_to_order
    except ImportError:
        return
    observe_tick_to_order(max(0.0, seconds))


# --- a stop that fired on the exchange --------------------------------------------------------


class StopFillNotVisible(errors.Retryable):
    """The stream said the stop filled, the exchange still shows the position: ask again."""


def settle_stop_triggered(deps: Deps, position_id: int, reason: str = "stop_triggered") -> bool:
    """Record the close of a position whose stop fired (seen on the user-data stream).

    The close path re-checks the exchange under the lock and takes the real exit price and
    PnL from the trades. If the exchange does not show the position flat yet (the fill
    event can overtake the position update), raise a Retryable so the task asks again;
    reconciliation is the fallback when it never does.
    """
    if settle_external_close(deps, position_id, reason):
        if reason == "stop_triggered":
            ensure_stop_triggered_event(position_id)
        return True
    with unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None or PositionStatus(position.status) in TERMINAL:
            return False  # already settled (by another delivery, or the close path)
    raise StopFillNotVisible(f"position {position_id}: exchange still shows it after a stop fill")
