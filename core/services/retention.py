"""Events retention: the event log must not grow without bound (old bot: it did).

Deletes in bounded batches by ``created_at`` (indexed), so a large backlog never holds a long
lock or a huge transaction; critical events are kept longer than the rest, since they are what
an incident review reaches for. Alerts keep a reference that becomes NULL (ON DELETE SET NULL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from core.db.session import unit_of_work
from core.services.deps import UnitOfWork

_DELETE_BATCH = text(
    """
    DELETE FROM events WHERE id IN (
        SELECT id FROM events
        WHERE created_at < :cutoff AND (severity <> 'critical' OR created_at < :critical_cutoff)
        ORDER BY created_at
        LIMIT :batch
    )
    """
)


@dataclass(frozen=True)
class RetentionResult:
    deleted: int
    batches: int


def purge_events(
    now: datetime,
    *,
    keep_days: int,
    keep_critical_days: int,
    batch: int = 10_000,
    max_batches: int = 100,
    uow: UnitOfWork = unit_of_work,
) -> RetentionResult:
    """Delete events older than ``keep_days`` (critical: ``keep_critical_days``)."""
    cutoff = now - timedelta(days=keep_days)
    critical_cutoff = now - timedelta(days=max(keep_days, keep_critical_days))
    deleted = batches = 0
    while batches < max_batches:
        with uow() as session:
            result = session.execute(
                _DELETE_BATCH,
                {"cutoff": cutoff, "critical_cutoff": critical_cutoff, "batch": batch},
            )
            count = int(result.rowcount)  # type: ignore[attr-defined]
        batches += 1
        deleted += count
        if count < batch:
            break
    return RetentionResult(deleted, batches)
