"""The next holder cleans up after a dead one: a killed stop move's stop is adopted or gone.

Why: a worker killed between sending a new stop and recording it leaves an ``intent`` row
(the client id, committed before the send) and, on the exchange, maybe a live stop beside
the old one. Trailing's next *move* would adopt it, but if the price turns no move comes,
and the two stops outlive the takeover. So the first price run on a symbol whose previous
lock holder died (``core.dead_runs``) resolves that run's intents before anything else:

- the intent's stop is live: it becomes the position's stop (ledger ``open`` through the
  order state machine, trailing row, the position's ``stop_price``, fenced) and every other
  open stop of the position is cancelled: make before break, finished by the new holder. A
  ledger row another path ended meanwhile (filled, cancelled) is not moved back;
- it filled: the settle path owns it (the user-data stream, reconciliation);
- it was cancelled or expired: the ledger says so;
- the exchange never heard of it: it stays an intent; trailing's next move sends that same
  client id (refused if it landed meanwhile) or looks it up.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Order, Position, TrailingStop
from core.dead_runs import clear_dead_run, dead_run_pending
from core.domain.orders import STOP_PURPOSES, OrderStatus
from core.events import EventType, record
from core.exchange import errors
from core.exchange.client_ids import parse_client_id
from core.exchange.types import OrderSnapshot
from core.locks import HeldLock, fenced_update
from core.services.deps import Deps
from core.services.executor import Executor, OrderIntent, old_orders
from core.services.executor import record as record_in_ledger
from core.services.positions import context, order_row, set_order_status

log = logging.getLogger(__name__)

_GONE_STATUS = {"canceled": "cancelled", "expired": "expired", "rejected": "rejected"}


def after_dead_run(deps: Deps, held: HeldLock, position: Position) -> bool:
    """Resolve a dead predecessor's intents on this symbol, once; True if one was adopted."""
    pending = held.dead_run  # asked when the lock was taken (``symbol_lock``)
    if pending is None:
        pending = dead_run_pending(deps.redis, held.key)
    if not pending:
        return False
    adopted = resolve_intents(deps, held, position.id, position.symbol)
    clear_dead_run(deps.redis, held.key)
    held.dead_run = False
    return adopted


def _stop_rows(session: Session, position_id: int) -> list[tuple[str, str, str | None]]:
    rows = session.execute(
        select(Order.client_order_id, Order.status, Order.exchange_order_id).where(
            Order.position_id == position_id,
            Order.purpose.in_(STOP_PURPOSES),
            Order.status.in_(("intent", "open")),
        )
    ).all()
    return [(cid, status, eid) for cid, status, eid in rows if cid]


def _seq(client_id: str) -> int:
    parsed = parse_client_id(client_id)
    return parsed.seq if parsed is not None else -1


def resolve_intents(deps: Deps, held: HeldLock, position_id: int, symbol: str) -> bool:
    """Look each intent up by client id and act as the module says; True if one adopted."""
    with deps.unit_of_work() as session:
        rows = _stop_rows(session, position_id)
    intents = sorted((cid for cid, status, _ in rows if status == "intent"), key=_seq)
    if not intents:
        return False
    live: tuple[str, OrderSnapshot] | None = None
    gone: dict[str, str] = {}
    for client_id in intents:
        try:
            found = deps.exchange.fetch_order(symbol, client_id, conditional=True)
        except errors.Retryable as exc:
            log.warning("intent %s not looked up (left to the next run): %s", client_id, exc)
            continue
        if found is None or found.is_filled:
            continue
        if found.is_open:
            live = (client_id, found)  # sorted by seq: the newest live one wins
        else:
            gone[client_id] = _GONE_STATUS.get(found.status, "expired")
    cancelled: list[str] = []
    if live is not None:
        others = [(cid, eid) for cid, status, eid in rows if cid != live[0]]
        cancelled = _cancel_others(deps, symbol, others)
    with deps.unit_of_work() as session:
        for client_id, status in gone.items():
            _set_status(session, client_id, status)
        if live is None:
            return False
        return _adopt(session, held, position_id, live[0], live[1], cancelled)


def _cancel_others(deps: Deps, symbol: str, others: list[tuple[str, str | None]]) -> list[str]:
    """Break step of the dead run's move: cancel the position's other stops (by id)."""
    done = []
    for cancel in Executor.of(deps).cancel_each(symbol, old_orders(others)):
        if cancel.failure is None and cancel.order.client_id is not None:
            done.append(cancel.order.client_id)
        else:  # left live; the zombie cleaner's surplus rule
            log.warning(
                "stop %s not cancelled after a dead run: %s", cancel.order.client_id, cancel.failure
            )
    return done


def _set_status(session: Session, client_id: str, status: str) -> None:
    set_order_status(session, client_id, status)  # through the order state machine


def _adopt(
    session: Session,
    held: HeldLock,
    position_id: int,
    client_id: str,
    order: OrderSnapshot,
    cancelled: list[str],
) -> bool:
    """Make the dead run's live stop the position's stop; False if the ledger refused it.

    The ledger row moves to ``open`` through the order state machine (the executor's ``record``),
    with the venue's id and trigger price: a row another path has meanwhile ended (the stop
    filled, or was cancelled) is not moved back, the refusal is recorded, and nothing of the
    position changes.
    """
    for other in cancelled:
        _set_status(session, other, "cancelled")
    position = session.get(Position, position_id, populate_existing=True)
    row = order_row(session, client_id)
    if position is None or row is None:
        return False
    kept = record_in_ledger(session, OrderIntent.from_ledger(row), OrderStatus.OPEN, order)
    if kept is not OrderStatus.OPEN:
        log.warning("stop %s of a dead run not adopted: the ledger has it %s", client_id, kept)
        return False
    _take_stop(session, held, position, client_id, order, cancelled)
    return True


def _take_stop(
    session: Session,
    held: HeldLock,
    position: Position,
    client_id: str,
    order: OrderSnapshot,
    cancelled: list[str],
) -> None:
    """The adopted stop's price on the position and its trailing row, with the event."""
    trigger: Decimal | None = order.trigger_price
    old_stop = position.stop_price
    row = session.get(TrailingStop, position.id)
    if row is not None and trigger is not None:
        row.current_stop = trigger
        row.update_count = (row.update_count or 0) + 1
    if trigger is not None:
        fenced_update(session, position.id, held.token, stop_price=trigger)
    record(
        session,
        EventType.TRAILING_STOP_UPDATED,
        ctx=context(position),
        order_id=client_id,
        exchange_order_id=order.id,
        old_stop=old_stop,
        new_stop=trigger,
        reason="adopted the stop of a run that died mid-move",
        cancelled=cancelled,
    )
