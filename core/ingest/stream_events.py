"""The events the ingest writes about its streams and loops: stop fills, reconnections,
loop restarts.

Written from a thread and best effort: a database outage never stops a stream (logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.db.session import unit_of_work
from core.events import EventType, record_alone
from core.services.closing import record_stop_triggered

log = logging.getLogger(__name__)


def record_stop_fill(
    exchange: str, symbol: str, position_id: int, order: Mapping[str, Any]
) -> None:
    """STOP_TRIGGERED, as the stream saw it (the settle task records the close itself)."""
    with unit_of_work() as session:
        record_stop_triggered(
            session,
            exchange=exchange,
            symbol=symbol,
            position_id=position_id,
            order_id=order.get("clientOrderId"),
            exchange_order_id=order.get("id"),
            average_price=order.get("average"),
            source="user_data_stream",
        )


def record_reconnect(exchange: str, stream: str, attempts: int, error: str) -> None:
    record_alone(
        EventType.WEBSOCKET_RECONNECTED,
        exchange=exchange,
        stream=stream,
        attempts=attempts,
        error=error[:500],
    )


async def off_loop(write: Callable[..., None], *args: Any) -> None:
    """Write an event from a thread; a database outage never stops a stream (logged)."""
    try:
        await asyncio.to_thread(write, *args)
    except SQLAlchemyError as exc:
        log.error("event not recorded (%s): %s", write.__name__, exc)


def record_loop_restart(name: str, restarts: int, error: str) -> None:
    record_alone(
        EventType.LOOP_RESTARTED,
        component=f"ingest/{name}",
        loop=name,
        restarts=restarts,
        error=error[:500],
    )


async def report_restart(name: str, restarts: int, error: str) -> None:
    """A ``loop_restarted`` event for any loop of the ingest that ``supervise`` restarts
    (its top-level components and the price stream's loops; best effort, as every event
    here)."""
    await off_loop(record_loop_restart, name, restarts, error)
