"""``/health`` components for every venue of the deployment beyond the default one.

Why separate components per venue (``exchange:bybit``, ``unprotected_positions:bybit``): with
``VIGIL_EXCHANGES=binance,bybit`` a Bybit outage or an unprotected Bybit position must fail
``/health`` and page just as the default venue's would, and say which venue it is. The
default venue keeps its components' names (``exchange``, ``unprotected_positions``), so a
single-venue deployment sees no change. Each venue's open orders are read at most once per
``VIGIL_HEALTH_CACHE_SECONDS``, through that venue's own client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from core.services.deps import deps_for
from core.services.health import (
    Component,
    ExchangeReads,
    exchange_component,
    unprotected_positions,
)
from core.venues import configured_venues

if TYPE_CHECKING:
    from core.services.health import HealthChecker

_READS: dict[str, ExchangeReads] = {}
_LOCK = threading.Lock()


def venue_reads(venue: str, ttl: float) -> ExchangeReads:
    """One cached reader of a venue's open orders per process, shared by /health and /metrics."""
    with _LOCK:
        if venue not in _READS:
            _READS[venue] = ExchangeReads(lambda: deps_for(venue), ttl)
        return _READS[venue]


def other_venue_checks(checker: HealthChecker) -> dict[str, Callable[[], Component]]:
    """The components of each configured venue other than the checker's own."""
    own = checker.exchange_name or checker.deps_factory().exchange_name
    checks: dict[str, Callable[[], Component]] = {}
    for venue in configured_venues(checker.settings):
        if venue == own:
            continue
        reads = venue_reads(venue, checker.settings.health_cache_seconds)
        checks[f"exchange:{venue}"] = partial(exchange_component, reads)
        checks[f"unprotected_positions:{venue}"] = partial(
            unprotected_positions, venue, reads, checker.uow
        )
    return checks
