"""The ledger rows a trailing move reads: the position's newest stop and its open stops.

Why only those: a move needs the next sequence number (the newest ``stop`` row's plus one),
whether that newest row is an unfinished intent (reused, never a new number), and the open
stops its break step cancels. Reading every stop row the position ever had made each move
cost more the longer the position trailed: after N moves, N rows as JSON, each client id
parsed in the worker. The newest is picked by the sequence number in its client id
(``core.domain.client_ids.seq_pattern``), not by row order (a reclaim can record an older
stop late), through an index on that number, so PostgreSQL does not read the rest either.

The price run's first statement carries these rows (``of_position``, a column beside the
position) and leaves them in the session (``preload``) for the move's intent (``read``);
outside a price run ``read`` runs its own statement.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import BigInteger, bindparam, cast, func, literal_column, or_, select
from sqlalchemy.orm import Session, aliased

from core.db.constants_sql import constant, in_constants
from core.db.models import Order, Position
from core.domain.client_ids import seq_pattern
from core.domain.orders import STOP_PURPOSES, OrderPurpose, OrderStatus

StopRow = tuple[str, str, str, str | None]
"""(client id, status, purpose, exchange id)"""

_PRELOADED = "stop_rows.preloaded"


def of_position() -> Any:
    """The rows as one column of a statement that selects the position (a JSON array of
    [client id, status, purpose, exchange id]; ``[]`` for none)."""
    rows = (
        select(
            func.coalesce(
                func.json_agg(
                    func.json_build_array(
                        Order.client_order_id, Order.status, Order.purpose, Order.exchange_order_id
                    )
                ),
                literal_column("'[]'::json"),
            )
        )
        .where(*_criteria(Position.id))
        .correlate(Position)
    )
    return rows.scalar_subquery()


def preload(session: Session, position_id: int, rows: list[list[Any]]) -> None:
    """Keep ``of_position``'s rows for this transaction's ``read`` (used once: a later
    transaction reads its own)."""
    session.info[(_PRELOADED, position_id)] = [tuple(row) for row in rows]


def read(session: Session, position_id: int) -> list[StopRow]:
    """The rows, preloaded by the price run's first statement or read now."""
    rows = session.info.pop((_PRELOADED, position_id), None)
    if rows is None:
        rows = [tuple(r) for r in session.execute(_statement(), {"stops_of": position_id})]
    return rows


def _criteria(position_id: Any) -> tuple[Any, ...]:
    """The position's stop rows that are open, and its newest ``stop`` row: found through
    ``ix_orders_position_stop_seq`` (the same expression), so it costs the same after a
    thousand moves as after one."""
    newest = aliased(Order)
    pattern: Any = literal_column(f"'{seq_pattern(OrderPurpose.STOP.value)}'")
    seq = cast(func.substring(newest.client_order_id, pattern), BigInteger)
    newest_stop = (
        select(newest.client_order_id)
        .where(
            newest.position_id == position_id,
            newest.purpose == constant(OrderPurpose.STOP.value),  # the index's predicate
            seq.is_not(None),
        )
        .order_by(seq.desc())
        .limit(1)
        .correlate_except(newest)  # the outer position's, never every position's
        .scalar_subquery()
    )
    return (
        Order.position_id == position_id,
        in_constants(Order.purpose, STOP_PURPOSES),
        or_(Order.status == OrderStatus.OPEN.value, Order.client_order_id == newest_stop),
    )


@functools.cache
def _statement() -> Any:
    """``read``'s own statement, built once (the position bound at execution)."""
    return select(
        Order.client_order_id, Order.status, Order.purpose, Order.exchange_order_id
    ).where(*_criteria(bindparam("stops_of")))
