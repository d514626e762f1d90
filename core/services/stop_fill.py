"""Why a position the exchange no longer has is gone: its own stop, or nobody knows.

Reconciliation finds a position in the database that the exchange does not have. When the
stop fill's settle was lost (an outage of the broker or the database outlasted its
retries, the ingest was down), calling it a ``phantom`` would record the right exit with the
wrong reason and no trace of the stop. So before settling it, the position's own stops
are looked up by client id: one that filled makes the reason ``stop_triggered``. A lookup
the exchange did not answer leaves the position to the next cycle: the faults that make a
stream miss a fill (an outage, a reconnect under rate limits) are the very ones that make a
lookup fail, and a phantom cannot be undone.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.db.models import Order
from core.exchange import errors
from core.services.deps import Deps

log = logging.getLogger(__name__)

STOP_PURPOSES = ("stop", "protection", "emergency")  # trailing's (it imports this module)


def closed_by_own_stop(deps: Deps, position_id: int, symbol: str) -> bool:
    """True if one of the position's stops is filled on the exchange (looked up by id).

    A lookup the exchange did not answer (a 5xx, a 429, a timeout) proves nothing: unless
    another stop is found filled, it is raised, so reconciliation leaves the position for
    its next cycle instead of settling it as a phantom. An id the venue never heard of is
    an answer (not filled); so is any other refusal, logged.
    """
    with deps.unit_of_work() as session:
        client_ids = session.scalars(
            select(Order.client_order_id).where(
                Order.position_id == position_id,
                Order.purpose.in_(STOP_PURPOSES),
                Order.status.in_(("open", "intent", "filled")),
            )
        ).all()
    unanswered: errors.Retryable | None = None
    for client_id in client_ids:
        if client_id is None:
            continue
        try:
            found = deps.exchange.fetch_order(symbol, client_id, conditional=True)
        except errors.Retryable as exc:
            log.warning("stop %s of position %s not looked up: %s", client_id, position_id, exc)
            unanswered = exc
            continue
        except errors.ExchangeFailure as exc:
            log.warning("stop %s of position %s refused a lookup: %s", client_id, position_id, exc)
            continue
        if found is not None and found.is_filled:
            return True
    if unanswered is not None:
        raise unanswered
    return False


def external_close_reason(deps: Deps, position_id: int, symbol: str) -> str:
    """``stop_triggered`` when the position's own stop closed it, else ``phantom``."""
    return "stop_triggered" if closed_by_own_stop(deps, position_id, symbol) else "phantom"


def ensure_stop_triggered_event(deps: Deps, position_id: int) -> None:
    """Record ``stop_triggered`` for a settled stop fill if the ingest could not (its write
    met a database outage): the position's timeline still shows what closed it."""
    from core.db.models import Event, Position
    from core.events import EventType, record
    from core.services.positions import context

    with deps.unit_of_work() as session:
        seen = session.scalar(
            select(Event.id).where(
                Event.position_id == position_id, Event.type == EventType.STOP_TRIGGERED.value
            )
        )
        position = session.get(Position, position_id)
        if seen is not None or position is None:
            return
        record(
            session,
            EventType.STOP_TRIGGERED,
            ctx=context(position),
            exit_price=position.exit_price,
            source="settle_close",
        )
