"""The sweep's pure question: would a decision now, at the latest price, change anything?

The trailing sweep wakes every position no tick woke for a sweep interval, to re-decide it
at the latest mark price. In a quiet market almost every such decision changes nothing, and
a price run per position (the symbol lock, a fencing token, transactions) cost ~13 ms of
worker time each. Deciding them here, in one batch and without I/O, leaves the runs (and
the lock) to the positions where something would change.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from core.domain.bands import PriceBand
from core.domain.trailing import PriceWindow, TrailingParams, TrailingState, band, decide


def unchanged_at(
    state: TrailingState,
    price: Decimal,
    now: datetime,
    params: TrailingParams,
    tick_size: Decimal | None,
    published: PriceBand | None,
) -> bool:
    """True only if a price run at ``price`` and ``now`` would do nothing but refresh the
    heartbeat: no order, no event, the state exactly as stored, and the band it would
    publish already published and not expired (time alone changes nothing yet).
    """
    decision = decide(state, PriceWindow.at(price), now, params, tick_size)
    if decision.send or decision.events or decision.state != state:
        return False
    wanted = band(state, params, now, tick_size)
    if wanted.valid_until is not None and wanted.valid_until <= now:
        return False
    return published is not None and published == wanted
