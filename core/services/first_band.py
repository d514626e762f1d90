"""A new position's trailing band, published in the step that makes it active.

Why: the ingest compares ticks only with published bands; a position whose first band waits
for the trailing sweep (``trailing_sweep_interval``) is not trailed at all until then, so a
sharp move right after the opening would reach the trailing logic only seconds later. Every
path to ``active`` (an opening, an adoption by reconciliation, recovery) ends in the
opening's activation step, which calls ``publish_first_band`` with the trailing row it has
just created.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from core.db.models import Position, TrailingStop
from core.exchange import errors
from core.services import bands, symbol_settings
from core.services.deps import Deps

log = logging.getLogger(__name__)


def publish_first_band(deps: Deps, position: Position, row: TrailingStop) -> None:
    """Publish the band of the trailing state in ``row``; best effort (the sweep is the
    backstop: a failure here only delays trailing to the next sweep, it loses nothing)."""
    from core.domain.trailing import band
    from core.services.trailing import BAND_COMPONENT, state_of, trailing_params

    try:
        tick = deps.exchange.rules(position.symbol).tick_size
        settings = symbol_settings.effective(
            deps.settings, deps.redis, position.exchange, position.symbol
        )
        found = band(state_of(row, position), trailing_params(settings), deps.clock.now(), tick)
        bands.publish(deps.redis, position.exchange, position.symbol, BAND_COMPONENT, found)
    except (RedisError, errors.ExchangeFailure) as exc:
        log.warning("first band of %s not published (the sweep will): %s", position.symbol, exc)
