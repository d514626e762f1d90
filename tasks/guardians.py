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
from core.services.deps import Deps
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.zombies import cleanup_zombies
from tasks.base import vigil_task
from tasks.venues import for_each_venue


@vigil_task(names.PROTECTION_CHECK, retry_on=(ExchangeRetryable,), max_retries=2)
def protection_check() -> dict[str, Any]:
    """Every active position gets exactly one full live stop (see core/services/protection.py)."""

    def one(deps: Deps) -> dict[str, Any]:
        report = check_protection(deps)
        return {**report.counts(), "details": report.details}

    return for_each_venue(one)


@vigil_task(names.RECONCILIATION, retry_on=(ExchangeRetryable,), max_retries=2)
def reconciliation() -> dict[str, Any]:
    """Database against exchange: phantoms settled, missing adopted, quantities corrected."""
    return for_each_venue(lambda deps: reconcile_positions(deps).counts())


@vigil_task(names.ZOMBIE_CLEANUP, retry_on=(ExchangeRetryable,), max_retries=2)
def zombie_cleanup(
    dry_run: bool | str = False, symbols: list[str] | str | None = None
) -> dict[str, Any]:
    """Cancel open orders that serve no position; ``dry_run`` only reports them.

    Arguments typed by hand may arrive as text: ``dry_run="true"``, ``symbols="BTCUSDT,ETHUSDT"``.
    """
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    only = frozenset(s.strip().upper() for s in symbols) if symbols else None

    def one(deps: Deps) -> dict[str, Any]:
        report = cleanup_zombies(deps, dry_run=_flag(dry_run), symbols=only)
        return {**report.counts(), "zombies": report.zombies}

    return for_each_venue(one)


def _flag(value: bool | str) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
