"""The guardians on beat (queue ``maintenance``): protection, reconciliation, zombie orders.

Each task is one service call and returns its counts, so ``vigil task NAME --wait`` prints
what the cycle did. Safe to run any number of times, concurrently with beat's own runs:
every change happens under the symbol's lock after a fresh read of the exchange. A failed
exchange snapshot is retried with backoff; the next beat run follows anyway.
"""

from __future__ import annotations

from typing import Any

from core import task_names as names
from core.exchange.errors import Retryable as ExchangeRetryable
from core.services.deps import get_deps
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.zombies import cleanup_zombies
from tasks.base import vigil_task


@vigil_task(names.PROTECTION_CHECK, retry_on=(ExchangeRetryable,), max_retries=2)
def protection_check() -> dict[str, Any]:
    """Every active position gets exactly one full live stop (see core/services/protection.py)."""
    report = check_protection(get_deps())
    return {**report.counts(), "details": report.details}


@vigil_task(names.RECONCILIATION, retry_on=(ExchangeRetryable,), max_retries=2)
def reconciliation() -> dict[str, Any]:
    """Database against exchange: phantoms settled, missing adopted, quantities corrected."""
    return reconcile_positions(get_deps()).counts()


@vigil_task(names.ZOMBIE_CLEANUP, retry_on=(ExchangeRetryable,), max_retries=2)
def zombie_cleanup(
    dry_run: bool | str = False, symbols: list[str] | str | None = None
) -> dict[str, Any]:
    """Cancel open orders that serve no position; ``dry_run`` only reports them.

    Arguments typed by hand may arrive as text: ``dry_run="true"``, ``symbols="BTCUSDT,ETHUSDT"``.
    """
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    report = cleanup_zombies(
        get_deps(),
        dry_run=_flag(dry_run),
        symbols=frozenset(s.strip().upper() for s in symbols) if symbols else None,
    )
    return {**report.counts(), "zombies": report.zombies}


def _flag(value: bool | str) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
