"""Opening positions (queue ``orders``)."""

from __future__ import annotations

from core import task_names as names
from core.locks import LockNotAcquired
from core.services.deps import deps_for_position
from core.services.opening import open_position
from core.transient import STORES_DOWN
from tasks.base import Retryable, vigil_task


@vigil_task(
    names.OPEN_POSITION,
    retry_on=(Retryable, LockNotAcquired, *STORES_DOWN),
    max_retries=8,
)
def open_position_task(position_id: int) -> str:
    """Drive one opening (entry, fill, stop, or rollback) as far as it goes now."""
    return open_position(deps_for_position(position_id), position_id).value
