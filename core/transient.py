"""The failures that mean "the same step may succeed in a moment", named once.

Every step the engine takes is idempotent, so a step interrupted by one of these is simply
run again: a task by its retry policy, a price run by its requeue (its window and pending
flag kept for it), the ingest's loops by their next attempt. Anything else is a failure to
record, not to retry.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from core.exchange.errors import Retryable
from core.locks import LockLost, LockNotAcquired

DATABASE_DOWN: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
"""PostgreSQL unreachable for a moment (a restart, a failover)."""

STORES_DOWN: tuple[type[BaseException], ...] = (
    *DATABASE_DOWN,
    RedisConnectionError,
    RedisTimeoutError,
)
"""PostgreSQL or Redis unreachable for a moment."""

SYMBOL_STEP_RETRYABLE: tuple[type[BaseException], ...] = (
    LockNotAcquired,
    LockLost,
    Retryable,
    *STORES_DOWN,
)
"""What a step on one symbol under its lock (a price run, a trailing sweep, a settle) is run
again for: the lock busy or lost, the venue saying "later", a store gone for a moment."""
