"""The chaos run's outage faults drive a stop that can fill: the victim is read on the exchange.

A position closed by hand (or stripped of its stop) moments before an outage is still
``active`` in the database until reconciliation's next cycle; driving its price fills no
stop, and the engine rightly settles it as a phantom. The victim is therefore the oldest
active position whose own stop is live on the exchange, on either venue.
"""

from types import SimpleNamespace

import pytest

from shell.harness.chaos_process import position_with_a_live_stop
from tests.integration.test_engine_venues import opened

pytestmark = pytest.mark.integration


def test_the_outage_victim_skips_positions_closed_or_unprotected_by_hand(paper_venue):
    venue = paper_venue
    chaos = SimpleNamespace(system=SimpleNamespace(deps=venue.deps, venue=venue.name))
    for symbol, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000"), ("SOLUSDT", "150")):
        venue.set_price(symbol, price)
    btc = opened(venue, venue.deps, "BTCUSDT")
    eth = opened(venue, venue.deps, "ETHUSDT")
    sol = opened(venue, venue.deps, "SOLUSDT", side="short")
    [btc_stop] = venue.triggers("BTCUSDT")
    assert position_with_a_live_stop(chaos) == (btc, "BTCUSDT", "long", btc_stop)

    venue.close_by_hand("BTCUSDT")  # the database still says active: no cycle ran yet
    assert venue.positions("BTCUSDT") == []
    [eth_stop] = venue.triggers("ETHUSDT")
    assert position_with_a_live_stop(chaos) == (eth, "ETHUSDT", "long", eth_stop)

    assert venue.cancel_stops_by_hand("ETHUSDT") == 1
    [sol_stop] = venue.triggers("SOLUSDT")
    assert position_with_a_live_stop(chaos) == (sol, "SOLUSDT", "short", sol_stop)
