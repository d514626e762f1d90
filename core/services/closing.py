"""The one way a position ends: every close path comes through here.

Why one function: the old bot closed positions from five places and each forgot something
(trailing state left behind, stops left on the exchange, no event). ``finish`` removes the
trailing and aged state, writes the exit and PnL, and records the events, in one transaction;
``close_position`` (engine-initiated: aged, manual) and ``settle_external_close`` (a stop hit
on the exchange, a close by hand, a phantom found by reconciliation) both end in it, and both
cancel what the engine left on the exchange for that symbol right after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db.models import AgedPosition, Order, Position, TrailingStop
from core.domain.orders import OrderPurpose as P
from core.domain.orders import OrderStatus
from core.domain.positions import TERMINAL, PositionStatus, PositionTrigger
from core.domain.reconciliation import Fill, exit_price_from_trades
from core.domain.sides import OrderSide, Side
from core.events import EventType, record
from core.exchange import errors
from core.exchange.client_ids import parse_client_id
from core.exchange.types import TradeSnapshot
from core.locks import HeldLock, LockNotAcquired, engine_lock
from core.logging import bind_correlation
from core.services import executor
from core.services.bands import band_key
from core.services.bands import channel as band_channel
from core.services.deps import Deps
from core.services.executor import Executor, OrderIntent
from core.services.positions import context, set_order_status, transition

T = PositionTrigger


@dataclass(frozen=True)
class Exit:
    price: Decimal | None
    realized_pnl: Decimal | None
    fees: Decimal | None

    @classmethod
    def of(cls, position: Position) -> Exit:
        """The exit a finished position has on record."""
        return cls(position.exit_price, position.realized_pnl, position.fees)

    def columns(self) -> dict[str, Decimal | None]:
        """The exit as the position row stores it."""
        return {"exit_price": self.price, "realized_pnl": self.realized_pnl, "fees": self.fees}

    def reported(self) -> dict[str, Any]:
        """What every close event says of the exit; unknown when the trades did not tell."""
        known = self.price is not None
        return {"exit_price": self.price, "realized_pnl": self.realized_pnl, "exit_known": known}


def realized_pnl(side: Side, entry: Decimal, exit_price: Decimal, quantity: Decimal) -> Decimal:
    direction = Decimal(1) if side is Side.LONG else Decimal(-1)
    return (exit_price - entry) * quantity * direction


def exit_from_trades(position: Position, trades: list[TradeSnapshot]) -> Exit:
    """The real exit (VWAP of closing fills), PnL net of the closing fees; None if unknown."""
    side = Side(position.side)
    since = position.opened_at or position.created_at
    fills = [
        Fill(t.id, OrderSide(t.side), t.price, t.quantity, t.timestamp)
        for t in trades
        if t.side in ("buy", "sell")
    ]
    price = exit_price_from_trades(fills, side, position.quantity, since)
    if price is None or position.entry_price is None:
        return Exit(price, None, None)
    closing = [t for t in trades if t.side == side.close_order_side and t.timestamp >= since]
    fees = sum((t.fee for t in closing), Decimal(0))
    gross = realized_pnl(side, position.entry_price, price, position.quantity)
    return Exit(price, gross - fees, fees)


def finish(
    session: Session,
    position: Position,
    token: int,
    *,
    trigger: PositionTrigger,
    reason: str,
    exit_: Exit,
    now: datetime,
) -> None:
    """Close the record: state cleanup, exit, events. The caller holds the symbol lock."""
    removed_trailing = session.execute(
        delete(TrailingStop).where(TrailingStop.position_id == position.id)
    ).rowcount  # type: ignore[attr-defined]
    if removed_trailing:
        record(session, EventType.TRAILING_STOP_REMOVED, ctx=context(position), reason=reason)
    removed_aged = session.execute(
        delete(AgedPosition).where(AgedPosition.position_id == position.id)
    ).rowcount  # type: ignore[attr-defined]
    if removed_aged:
        record(session, EventType.AGED_POSITION_REMOVED, ctx=context(position), reason=reason)
    closed: dict[str, Any] = {"closed_at": now, "close_reason": reason[:40], **exit_.columns()}
    transition(session, position, trigger, token, reason=reason, **closed)
    record(
        session, EventType.POSITION_CLOSED, ctx=context(position), reason=reason, **exit_.reported()
    )


def record_stop_triggered(
    session: Session,
    *,
    exchange: str,
    symbol: str,
    position_id: int,
    order_id: str | None,
    exchange_order_id: str | None,
    average_price: object,
    correlation_id: str | None = None,
    source: str | None = None,
) -> None:
    """One of the engine's stops fired: its ledger row is ``filled`` and ``STOP_TRIGGERED``
    is on record (seen by the user-data stream, or by trailing's lookup). The close itself
    is recorded by the close path (``settle_external_close``) from the exchange's trades."""
    if order_id is not None:
        set_order_status(session, order_id, OrderStatus.FILLED)
    extra: dict[str, Any] = {"source": source} if source else {}
    record(
        session,
        EventType.STOP_TRIGGERED,
        exchange=exchange,
        symbol=symbol,
        position_id=position_id,
        order_id=order_id,
        exchange_order_id=exchange_order_id,
        correlation_id=correlation_id,
        average_price=average_price,
        **extra,
    )


def drop_bands(deps: Deps, position: Position) -> None:
    """A closed symbol is watched by nothing: its ticks must enqueue no more work."""
    deps.redis.delete(band_key(position.exchange, position.symbol))
    deps.redis.publish(band_channel(position.exchange), position.symbol)


def lock_for(
    deps: Deps, exchange: str, symbol: str, *, lazy_token: bool = False
) -> AbstractContextManager[HeldLock]:
    """The (exchange, symbol) lock with the settings' timeouts (``core.locks.engine_lock``);
    ``lazy_token``: the holder draws its fencing token in its first transaction."""
    return engine_lock(deps.redis, deps.settings, exchange, symbol, lazy_token=lazy_token)


@dataclass(frozen=True)
class PositionRef:
    """What taking a position's lock needs (where it trades, how its log lines are tagged),
    read in a short transaction and kept after it ends."""

    id: int
    exchange: str
    symbol: str
    correlation_id: str

    @classmethod
    def of(cls, position: Position) -> PositionRef:
        return cls(position.id, position.exchange, position.symbol, position.correlation_id)


@contextmanager
def holding_position(deps: Deps, ref: PositionRef) -> Iterator[HeldLock]:
    """The position's symbol lock (``lock_for``), with the position named on every log line
    written while it is held."""
    with (
        bind_correlation(ref.correlation_id, position_id=ref.id),
        lock_for(deps, ref.exchange, ref.symbol) as held,
    ):
        yield held


def _exchange_has_position(deps: Deps, symbol: str) -> bool:
    return any(p.symbol == symbol for p in deps.exchange.positions())


@dataclass(frozen=True)
class CancelledLeftover:
    client_id: str | None
    exchange_order_id: str
    purpose: str


def cancel_leftovers(deps: Deps, position: Position) -> list[CancelledLeftover]:
    """Cancel the engine's open orders for a closed position's symbol (stops, closes).

    Runs right after every close: a stop that outlives its position could open a new one
    (reduce-only makes that impossible on Binance, but a venue's closePosition stop would
    stay armed), and left-behind stops pile up to the open-order limit. Exchange calls
    only: the caller records what was cancelled (``record_cancelled_leftovers``) in the
    transaction that finishes the close, after these calls.
    """
    cancelled = []
    for order in deps.exchange.open_orders(position.symbol):
        if order.symbol != position.symbol:
            continue
        ours = parse_client_id(order.client_id)
        if ours is None or ours.position_id != position.id:
            continue
        if Executor.of(deps).cancel(order.symbol, order.id, conditional=order.conditional):
            cancelled.append(CancelledLeftover(order.client_id, order.id, ours.purpose))
    return cancelled


def record_cancelled_leftovers(
    session: Session, position: Position, cancelled: list[CancelledLeftover]
) -> None:
    for order in cancelled:
        record(
            session,
            EventType.ORPHANED_SL_CLEANED,
            ctx=context(position),
            order_id=order.client_id,
            exchange_order_id=order.exchange_order_id,
            purpose=order.purpose,
        )


def settle_external_close(
    deps: Deps, position_id: int, reason: str, *, sweep_zombies: bool = True
) -> bool:
    """Record a close that happened on the exchange (stop hit, closed by hand, phantom).

    Re-checked under the lock: if the exchange still has the position nothing changes and
    False is returned. Safe to run any number of times. ``sweep_zombies=False`` for a caller
    that sweeps many settled symbols at once (reconciliation).
    """
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None or PositionStatus(position.status) in TERMINAL:
            return False
        ref = PositionRef.of(position)
    symbol = ref.symbol
    with holding_position(deps, ref) as held:
        with deps.unit_of_work() as session:
            position = session.get(Position, position_id, populate_existing=True)
            assert position is not None
            if PositionStatus(position.status) in TERMINAL:
                return False
        # the exchange between transactions; the close is written after, all or nothing
        if _exchange_has_position(deps, symbol):
            return False
        _finish_flat(deps, held, position, reason)
    drop_bands(deps, position)
    if sweep_zombies:
        sweep_after_close(deps, symbol)
    return True


def sweep_after_close(deps: Deps, symbol: str) -> None:
    """The zombie pass for one symbol, right after its close, outside the symbol's lock.

    ``cancel_leftovers`` already removed the closed position's own orders; this catches the
    rest (orders by hand, a stop of an earlier life). Best effort: the zombie cadence on beat
    repeats it, so an exchange error here is recorded and left to that.
    """
    from core.services.zombies import cleanup_zombies

    try:
        cleanup_zombies(deps, symbols=frozenset({symbol}))
    except (errors.ExchangeFailure, LockNotAcquired) as exc:
        deps.record_failure_warning(
            EventType.EXCHANGE_ERROR,
            exc,
            symbol=symbol,
            reason="zombie sweep after close deferred to beat",
        )


def close_position(deps: Deps, position_id: int, reason: str) -> bool:
    """Close at market, reduce-only, verify flat on the exchange, then finish the record.

    Returns True when the position is closed (now or before). A close that cannot be done
    leaves the position ``active`` with its stop and raises a Retryable for the caller's
    retry policy. A duplicate close is harmless: reduce-only can never open or grow.
    """
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None:
            return False
        if PositionStatus(position.status) in TERMINAL:
            return True
        ref = PositionRef.of(position)
    with holding_position(deps, ref) as held:
        closed = close_locked(deps, held, position_id, reason)
    if closed:
        sweep_after_close(deps, ref.symbol)
    return closed


def close_locked(deps: Deps, held: HeldLock, position_id: int, reason: str) -> bool:
    """``close_position`` for a caller that already holds the symbol's lock (price path)."""
    position = _request_close(deps, held, position_id, reason)
    if position is None:
        return True  # closed before
    side = Side(position.side)
    failure: errors.ExchangeFailure | None = None
    flat_before = False
    try:
        flat_before = not _exchange_has_position(deps, position.symbol)
        if not flat_before:
            _send_close(deps, position, side)
        closed = not _exchange_has_position(deps, position.symbol)
    except errors.ExchangeFailure as exc:
        closed, failure = False, exc
    if closed and flat_before:
        reason = _reason_when_found_flat(deps, position_id, position.symbol, reason)
    if closed:
        _finish_flat(deps, held, position, reason)
        drop_bands(deps, position)
        _ensure_stop_triggered_event(deps, position_id, reason)
        return True
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id, populate_existing=True)
        assert position is not None
        record(
            session,
            EventType.CLOSE_FAILED,
            ctx=context(position),
            reason=reason,
            error=str(failure or "still open"),
        )
        transition(
            session,
            position,
            T.CLOSE_FAILED,
            held.token,
            reason="close failed",
            close_reason=None,
        )
    raise errors.Retryable(f"close of position {position_id} failed: {failure}")


def _reason_when_found_flat(deps: Deps, position_id: int, symbol: str, requested: str) -> str:
    """Why a position this close found already flat is closed: its own stop, if one filled.

    A stop that fills while its settle waits (a store outage, the settle's backoff) can be
    overtaken by a close requested for another reason (aged, by the operator); that close
    sent nothing, so its reason would be the wrong one. An unanswered lookup is raised
    (Retryable): the close is retried rather than recorded with a guess.
    """
    from core.services.stop_fill import closed_by_own_stop

    return "stop_triggered" if closed_by_own_stop(deps, position_id, symbol) else requested


def _ensure_stop_triggered_event(deps: Deps, position_id: int, reason: str) -> None:
    """A close by the position's own stop has its ``stop_triggered`` event on record."""
    if reason == "stop_triggered":
        from core.services.stop_fill import ensure_stop_triggered_event

        ensure_stop_triggered_event(deps, position_id)


def _finish_flat(deps: Deps, held: HeldLock, flat: Position, reason: str) -> None:
    """The close confirmed on the exchange (the position is flat there): the exit's trades
    read and the leftovers cancelled (exchange calls, between transactions), then the record
    finished with its exit and the cancelled leftovers in one transaction."""
    trades = deps.exchange.trades(flat.symbol, since=flat.created_at)
    cancelled = cancel_leftovers(deps, flat)
    with deps.unit_of_work() as session:
        position = session.get(Position, flat.id, populate_existing=True)
        assert position is not None
        finish(
            session,
            position,
            held.token,
            trigger=T.CLOSED_ON_EXCHANGE,
            reason=reason,
            exit_=exit_from_trades(position, trades),
            now=deps.clock.now(),
        )
        record_cancelled_leftovers(session, position, cancelled)


def _request_close(deps: Deps, held: HeldLock, position_id: int, reason: str) -> Position | None:
    """``active -> closing`` with its event (a rollback's ``closing`` stays); None: closed
    already; an opening still in flight is not closable now (Retryable)."""
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id, populate_existing=True)
        assert position is not None
        status = PositionStatus(position.status)
        if status in TERMINAL:
            return None
        if status is PositionStatus.ACTIVE:
            record(
                session, EventType.POSITION_CLOSE_REQUESTED, ctx=context(position), reason=reason
            )
            transition(
                session,
                position,
                T.CLOSE_REQUESTED,
                held.token,
                reason=reason,
                close_reason=reason[:40],
            )
        elif status is not PositionStatus.CLOSING:
            raise errors.Retryable(f"position {position_id} is {status}; not closable now")
    return position


def _send_close(deps: Deps, position: Position, side: Side) -> None:
    """One reduce-only market close, a fresh client id per attempt; the caller verifies."""
    with deps.unit_of_work() as session:
        attempts = len(
            session.scalars(
                select(Order.id).where(Order.position_id == position.id, Order.purpose == "close")
            ).all()
        )
        intent = OrderIntent.of(
            position,
            P.CLOSE,
            side.close_order_side,
            position.quantity,
            seq=attempts,
            reduce_only=True,
        )
        executor.record(session, intent)
    try:
        sent = Executor.of(deps).send(intent, lookup_timeout=0)
    except errors.ReduceOnlyRejected:
        return  # nothing left to reduce: closed meanwhile
    except errors.OutcomeUnknown:
        return  # reduce-only: whatever happened, the verification below decides
    order, cid = sent.order, intent.client_id
    with deps.unit_of_work() as session:
        record(
            session,
            EventType.CLOSE_ORDER_PLACED,
            ctx=context(position),
            order_id=cid,
            exchange_order_id=order.id,
            quantity=position.quantity,
        )
        if order.is_filled:
            record(
                session,
                EventType.CLOSE_ORDER_FILLED,
                ctx=context(position),
                order_id=cid,
                filled=order.filled,
                average_price=order.average,
            )
        status = OrderStatus.FILLED if order.is_filled else OrderStatus.OPEN
        executor.record(session, intent, status, order)


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
        _ensure_stop_triggered_event(deps, position_id, reason)
        return True
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        if position is None or PositionStatus(position.status) in TERMINAL:
            return False  # already settled (by another delivery, or the close path)
    raise StopFillNotVisible(f"position {position_id}: exchange still shows it after a stop fill")
