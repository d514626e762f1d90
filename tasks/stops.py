"""The price path and stop tasks (queue ``stops``; the settle task goes to ``orders``).

Thin: each parses its arguments and calls one service in ``core.services.price_path`` or
``core.services.trailing``; the services decide, these only map results to re-runs.
"""

from __future__ import annotations

from typing import Any

from core import task_names as names
from core.services import price_batch, price_path
from core.services.deps import deps_for, deps_for_position
from core.services.give_up import record_gave_up
from core.services.trailing import settle_stop_triggered
from core.transient import SYMBOL_STEP_RETRYABLE
from tasks.base import vigil_task
from tasks.venues import for_each_venue

_TRANSIENT = SYMBOL_STEP_RETRYABLE
# settle_close: 1+2+4+8+16+30*7 s = about 4 min of retries before it gives up
SETTLE_RETRIES = 12
SETTLE_BACKOFF_MAX = 30
# a symbol of a batch whose run may succeed later runs again alone, this much later (s)
RETRY_ALONE_AFTER = 1.0


@vigil_task(names.ON_PRICE, retry_on=_TRANSIENT, max_retries=5, backoff_max=5)
def on_price_task(exchange: str, symbol: str) -> dict[str, Any]:
    """React to the symbol's coalesced price window (trailing, aged close)."""
    result = price_path.on_price(
        deps_for(exchange), exchange, symbol, requeue=_requeue(exchange, symbol)
    )
    return {"position_id": result.position_id, "rerun_at": str(result.rerun_at or "")}


def _requeue(exchange: str, symbol: str) -> price_path.Requeue:
    return lambda countdown: on_price_task.apply_async((exchange, symbol), countdown=countdown)


@vigil_task(names.ON_PRICES, retry_on=())
def on_prices_task(exchange: str, symbols: list[str]) -> dict[str, Any]:
    """Several symbols' windows of one frame, their runs overlapped (core/services/price_batch).

    Not retried as a whole: a symbol whose run may succeed later is queued again on its own
    (``on_price``, a second later, its window and flag kept for it), so the symbols that
    moved are not run again. A symbol that failed for good is logged; the task then fails.
    """
    report = price_batch.on_prices(
        exchange,
        symbols,
        lambda deps, symbol: price_path.on_price(
            deps, exchange, symbol, requeue=_requeue(exchange, symbol)
        ),
        retry_later=lambda symbol: on_price_task.apply_async(
            (exchange, symbol), countdown=RETRY_ALONE_AFTER
        ),
        threads=deps_for(exchange).settings.price_task_batch,
    )
    if report.failed:
        raise next(iter(report.failed.values()))
    return report.as_dict()


@vigil_task(names.TRAILING_SWEEP, retry_on=_TRANSIENT, max_retries=2)
def trailing_sweep_task() -> dict[str, Any]:
    """Wake the price task of trailing positions no tick woke lately (beat)."""
    return for_each_venue(
        lambda deps: price_path.sweep(
            deps, lambda ex, symbol: on_price_task.delay(ex, symbol)
        ).as_dict()
    )


@vigil_task(
    names.SETTLE_CLOSE,
    retry_on=_TRANSIENT,
    max_retries=SETTLE_RETRIES,
    backoff_max=SETTLE_BACKOFF_MAX,
    jitter=False,
    bind=True,
)
def settle_close_task(self: Any, position_id: int, reason: str = "stop_triggered") -> bool:
    """Record the close of a position whose stop fired on the exchange.

    A store outage is waited out for minutes (1, 2, 4 ... 30 s between tries, without the
    jitter that could make every wait zero), not milliseconds; giving up is a critical
    ``task_gave_up`` event, so reconciliation's phantom is never the silent outcome.
    """
    try:
        return settle_stop_triggered(deps_for_position(position_id), position_id, reason)
    except _TRANSIENT as exc:
        if self.request.retries >= SETTLE_RETRIES:
            record_gave_up(names.SETTLE_CLOSE, position_id, self.request.retries + 1, exc)
        raise
