"""``task_gave_up`` (critical) for a task that stopped retrying work that matters.

Why its own module: the event must be written when the outage that exhausted the retries
may still be on; a write that fails then is logged at CRITICAL instead, never swallowed.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from core.db.session import unit_of_work
from core.events import EventType, Severity
from core.services.deps import UnitOfWork, record_alone_through

log = logging.getLogger(__name__)


def record_gave_up(
    task: str,
    position_id: int | None,
    attempts: int,
    error: BaseException,
    uow: UnitOfWork = unit_of_work,
) -> None:
    """Record that ``task`` gave up on ``position_id`` after ``attempts`` tries."""
    try:
        record_alone_through(
            uow,
            EventType.TASK_GAVE_UP,
            severity=Severity.CRITICAL,
            position_id=position_id,
            task=task,
            attempts=attempts,
            error=str(error)[:500],
        )
    except SQLAlchemyError as exc:
        log.critical(
            "%s gave up on position %s after %d tries (%s); event not recorded: %s",
            task,
            position_id,
            attempts,
            error,
            exc,
        )
