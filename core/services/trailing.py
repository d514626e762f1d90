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

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy.orm import Session

from core.db.models import Position, TrailingStop
from core.domain.bands import PriceBand
from core.domain.orders import OrderStatus, covers, stops_for
from core.domain.protection import StopOwner
from core.domain.sides import Side
from core.domain.trailing import (
    PriceWindow,
    TrailingDecision,
    TrailingState,
    band,
    decide,
)
from core.events import EventType, record, record_now
from core.exchange import errors
from core.exchange.client_ids import client_order_id, parse_client_id
from core.exchange.types import OrderSnapshot
from core.locks import HeldLock, fenced_update
from core.services import bands, executor, stop_rows, symbol_settings, trailing_events
from core.services.closing import (
    StopFillNotVisible,
    record_stop_triggered,
    settle_stop_triggered,
)
from core.services.deps import Deps
from core.services.executor import (
    Executor,
    OrderIntent,
    Replacement,
    Sent,
    old_orders,
    status_of,
)
from core.services.positions import context, set_order_status
from core.services.trailing_state import (
    active_row,
    load_active,
    state_of,
    store_if_active,
    trailing_params,
)

__all__ = [
    "StopFillNotVisible",
    "decide_in",
    "react",
    "settle_stop_triggered",
    "trailing_params",
]

log = logging.getLogger(__name__)

BAND_COMPONENT = "trailing"


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
    with deps.unit_of_work() as session:
        step = trailer.decide(session, load_active(session, position.id), window)
    return trailer.finish(step, window, position)


def decide_in(
    session: Session,
    deps: Deps,
    held: HeldLock,
    position: Position,
    window: PriceWindow,
    now: datetime,
) -> Callable[[], bool]:
    """``react``'s first transaction done in the caller's (the price run's first, which
    loaded ``position`` in it): the decision, its events and the move's intent are written
    there. The caller commits, then calls the second half this returns (the orders, their
    outcome, the band), so the intent is still durable before the order can exist. Saves
    a transaction and a second read of the position per run.
    """
    trailer = _Trailer(deps, held, position.id, now)
    step = trailer.decide(session, active_row(session, position), window)
    return lambda: trailer.finish(step, window, position)


@dataclass(frozen=True)
class _Intent:
    client_id: str
    maybe_sent: bool  # an earlier run committed this intent: the order may exist
    # the position's other open stops (client id, exchange id): what the break step cancels
    old: tuple[tuple[str, str | None], ...] = ()


class _Step(NamedTuple):
    """A decision that sends, and its intent (None: protection owns the stop)."""

    decision: TrailingDecision
    intent: _Intent | None


class _Trailer:
    """One decision for one position, under the symbol lock held by the caller.

    Transactions of a move: (1) load, decide, heartbeat, intent (and the old stops), in
    ``decide`` (the price run's first transaction, see ``decide_in``); the new stop is sent,
    then the old ones cancelled; (2) accepted: ledger, state, position's stop, events. A
    decision without an order is transaction (1) only.
    """

    # the position as loaded by ``decide`` (read-only for the rest of the decision)
    position: Position
    symbol: str
    side: Side
    quantity: Decimal
    tick: Decimal

    def __init__(self, deps: Deps, held: HeldLock, position_id: int, now: datetime) -> None:
        self.deps = deps
        self.ex = deps.exchange
        self.executor = Executor.of(deps)
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

    def decide(
        self,
        session: Session,
        loaded: tuple[Position, TrailingStop] | None,
        window: PriceWindow,
    ) -> _Step | None:
        """Transaction (1) in ``session``: None when nothing is left to send."""
        if loaded is None:
            return None
        position, row = loaded
        self.position = position
        self.symbol = position.symbol
        self.tick = self.ex.rules(position.symbol).tick_size  # before any write
        self.params = trailing_params(
            symbol_settings.effective(
                self.deps.settings, self.deps.redis, position.exchange, position.symbol
            )
        )
        self.side = Side(position.side)
        self.quantity = position.quantity
        current = state_of(row, position)
        self.persisted = current
        decision = decide(current, window, self.now, self.params, self.tick)
        if not decision.send:
            # trailing is watching this position (a move writes it with its outcome,
            # ``_accepted`` or ``_failed``: not here, an UPDATE of its own). A cached UPDATE,
            # not the loaded row's attributes: the ORM's flush of a row costs several times it
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
            if not store_if_active(session, position.id, decision.state, self.now):
                self.persisted = None  # closed since the run's first read: nothing to watch
                return None
            self.persisted = decision.state
            trailing_events.record_decision(session, position, decision, window)
            return None
        owned = row.owner == StopOwner.TRAILING
        return _Step(decision, self._intent(session, position, decision) if owned else None)

    def finish(self, step: _Step | None, window: PriceWindow, position: Position) -> bool:
        """After transaction (1): the move, if any; then the band from the state written."""
        if step is not None:
            self._carry_out(step, window)
        self._send_step(sent=False)  # moved nothing (or done): the batch's gate need not wait
        found = self.band()
        bands.publish(self.deps.redis, position.exchange, position.symbol, BAND_COMPONENT, found)
        return False

    def _carry_out(self, step: _Step, window: PriceWindow) -> None:
        decision, intent = step
        if intent is None:
            if not self._reclaim(decision):
                return
            intent = self._next_intent(decision)
        self._move(decision, window, intent)

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
        with self.deps.unit_of_work() as session:
            loaded = load_active(session, self.position_id)
            if loaded is None:
                return False
            position, row = loaded
            row.owner = StopOwner.TRAILING.value
            for order in live:
                ours = parse_client_id(order.client_id)
                if order.client_id and ours is not None and ours.position_id == position.id:
                    # listed as open so the move's break step cancels it
                    stop = replace(
                        self._order(order.client_id, order.trigger_price), purpose=ours.purpose
                    )
                    executor.record(session, stop, OrderStatus.OPEN, exchange_order_id=order.id)
            record(
                session,
                EventType.TRAILING_STOP_RECLAIMED,
                ctx=context(position),
                from_owner=StopOwner.PROTECTION,
                live_stops=[o.client_id or o.id for o in live],
            )
        return True

    # --- make before break ----------------------------------------------------------------

    def _intent(self, session: Session, position: Position, decision: TrailingDecision) -> _Intent:
        """The client id of this move, durable (with the decision's commit) before the order
        can exist. An unfinished intent of an earlier run is reused, never a new seq."""
        assert decision.new_stop is not None
        rows = stop_rows.read(session, position.id)  # the newest stop, the open ones
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
            executor.record(session, self._order(cid, decision.new_stop))
            maybe_sent = False
        old = tuple((c, eid) for c, status, _, eid in rows if status == "open" and c != cid)
        return _Intent(cid, maybe_sent, old)

    def _move(self, decision: TrailingDecision, window: PriceWindow, intent: _Intent) -> None:
        assert decision.new_stop is not None
        stop: Sent | None = None
        for _ in range(3):  # an intent whose order died on the exchange gives way to the next
            if not intent.maybe_sent:
                break
            found = self._lookup(intent.client_id)
            if found is None:
                break  # never landed: send it (same client id, so a late landing is refused)
            if found.is_open:
                stop = Sent(found, self._order(intent.client_id, decision.new_stop), sent=False)
                break
            if found.is_filled:
                self._stop_already_filled(intent.client_id, found)
                return
            intent = self._next_intent(decision, gone=(intent.client_id, status_of(found)))
        old = old_orders(intent.old)
        self.held.extend()  # a full TTL for the move: send, a lookup, the old stops' cancel
        if stop is not None:  # live already: only the break step is left
            self._send_step(sent=False)  # nothing to send: a batch's gate need not wait
            replaced = Replacement(stop, self.executor.cancel_each(self.symbol, old))
        else:
            try:
                new = self._order(intent.client_id, decision.new_stop)
                # make, then (a batch's other sends first) break
                sent = functools.partial(self._send_step, sent=True)
                replaced = self.executor.replace_stop(new, old, before_break=sent)
            except errors.ExchangeFailure as exc:  # the old stop stays
                self._send_step(sent=False)
                self._failed(decision, exc, stage="place")
                return
        self._accepted(decision, replaced, window)

    def _send_step(self, *, sent: bool) -> None:
        """Tell a price batch's gate this run's send is over (``Deps.send_step``)."""
        step = self.deps.send_step
        if step is not None:
            step.sent() if sent else step.skipped()

    def _order(self, client_id: str, price: Decimal | None) -> OrderIntent:
        """The stop-market intent behind one of this position's stop client ids."""
        parsed = parse_client_id(client_id)
        return OrderIntent(
            self.position_id,
            self.ex.name,
            self.symbol,
            client_id,
            parsed.purpose if parsed is not None else "stop",
            self.side.close_order_side,
            self.quantity,
            trigger_price=price,
            reduce_only=True,
            stop=True,
        )

    def _next_intent(
        self, decision: TrailingDecision, gone: tuple[str, OrderStatus] | None = None
    ) -> _Intent:
        """The move's intent in a transaction of its own: after a reclaim, or once an earlier
        intent's order is gone (``gone``: its client id and status, closed first)."""
        with self.deps.unit_of_work() as session:
            if gone is not None:
                set_order_status(session, *gone)
            loaded = load_active(session, self.position_id)
            assert loaded is not None
            return self._intent(session, loaded[0], decision)

    def _lookup(self, client_id: str) -> OrderSnapshot | None:
        try:
            return self.executor.lookup(self._order(client_id, Decimal(0)))
        except errors.Retryable:
            return None  # cannot tell: the send below reuses the client id, never a second one

    def _accepted(
        self, decision: TrailingDecision, replaced: Replacement, window: PriceWindow
    ) -> None:
        """The new stop is live: now, and only now, the new state is written, together with
        the break step's outcome (an old stop that could not be cancelled stays ``open`` in
        the ledger, with an event: the next move or the zombie cleaner removes it).

        A worker that dies before this commit leaves the intent: the next run looks the new
        stop up by its client id and adopts it; an old stop already cancelled then counts as
        gone.
        """
        stop = replaced.new.order
        live_price = replaced.new.trigger_price or decision.new_stop
        state = replace(decision.state, stop_price=live_price)
        tick_at = getattr(window, "first_tick_at", None)
        position = self.position  # its id, venue, symbol and correlation id: fixed for life
        with self.deps.unit_of_work() as session:
            if not store_if_active(session, position.id, state, self.now):
                return  # closed meanwhile (not under the lock; kept for safety)
            executor.record(session, replaced.new.intent, OrderStatus.OPEN, stop)
            # fenced, and only this write (the ORM object is not touched: no second UPDATE)
            fenced_update(session, position.id, self.held.token, stop_price=live_price)
            record_now(  # the decision's events and the move's, one statement
                session,
                *trailing_events.decision_events(position, decision, window),
                *trailing_events.moved_events(position, decision, replaced, window, live_price),
            )
            for c in replaced.cancels:
                if c.failure is None and c.order.client_id is not None:
                    set_order_status(session, c.order.client_id, OrderStatus.CANCELLED)
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
        with self.deps.unit_of_work() as session:
            loaded = load_active(session, self.position_id)
            if loaded is None:
                return
            position, row = loaded
            row.highest_price = decision.state.highest_price
            row.lowest_price = decision.state.lowest_price
            row.last_update_at = self.now
            row.pending_stop = decision.new_stop
            row.heartbeat_at = self.now
            self.persisted = state_of(row, position)
            trailing_events.failed(
                session, position, decision, failure, stage=stage, reason=reason, owner=row.owner
            )

    def _stop_already_filled(self, client_id: str, order: OrderSnapshot) -> None:
        """A stop of this move fired before we saw it: the close path settles the position."""
        with self.deps.unit_of_work() as session:
            position = session.get(Position, self.position_id)
            assert position is not None
            record_stop_triggered(
                session,
                exchange=position.exchange,
                symbol=position.symbol,
                position_id=position.id,
                order_id=client_id,
                exchange_order_id=order.id,
                average_price=order.average,
                correlation_id=position.correlation_id,
            )


def _observe_tick_to_order(seconds: float) -> None:
    """Feed the tick-to-order histogram when the metrics module is installed."""
    try:
        from core.metrics import observe_tick_to_order
    except ImportError:
        return
    observe_tick_to_order(max(0.0, seconds))
