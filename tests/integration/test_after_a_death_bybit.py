"""The engine after a death on Bybit, with real processes on the paper exchange's v5 dialect.

The same cases as ``test_after_a_death.py`` (Binance), where Bybit differs: mark prices ride
on per-symbol ``tickers`` topics, a stop is a conditional order in the one order book, and
its fill is reported on the private ``order``/``execution`` topics. Real Celery workers,
the ingest's streams (``run_price_stream``) and the embedded stores, killed or stopped for
the outages. The bounds are docs/reliability.md's; each test prints what it measured:

- a stop that fills during a 20 s PostgreSQL or Redis outage: ``closed``/``stop_triggered``
  with the real exit, never ``phantom``;
- +3 % right after activation: the trailing logic reacts within 1 s.
"""

import os
import signal
import time
from decimal import Decimal

import pytest

from core.config import get_settings, load_settings
from core.services import bands
from tests.fixtures.processes import Processes
from tests.integration.test_after_a_death import (
    Workers,
    _closed_or_none,
    closed_as,
    event_types,
    move_count,
    poll_until,
)
from tests.integration.test_engine_venues import opened
from tests.integration.test_price_path import StreamThread

pytestmark = pytest.mark.integration
EX = "bybit"


def live_triggers(sim, symbol="BTCUSDT"):
    """The trigger prices of the open conditional orders of ``symbol``."""
    return sorted(
        Decimal(o["triggerPrice"])
        for o in sim.state()["open_orders"]
        if o["symbol"] == symbol and o.get("triggerPrice") not in (None, "", "0")
    )


@pytest.fixture
def stream_settings(bybit_sim, clean_db, redis_url):
    get_settings.cache_clear()
    return load_settings(
        exchange_url=bybit_sim.url, paper_dialect="bybit", price_band_refresh_interval=5
    )


@pytest.fixture
def workers(bybit_sim, clean_db, redis_url, tmp_path):
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_PAPER_DIALECT="bybit",
        VIGIL_EXCHANGE_URL=bybit_sim.url,
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL="0",
        VIGIL_EXCHANGE_TIMEOUT_MS="10000",
        VIGIL_ENTRY_FILL_TIMEOUT="10",
    )
    with Processes(env, stop_signal=signal.SIGKILL, log_dir=tmp_path) as processes:
        yield Workers(processes)


@pytest.fixture
def venue(bybit_venue):
    return bybit_venue


def stream_is_live(redis_client):
    """Ticks flow and a worker consumes price tasks (ETH has no position: its run
    withdraws the band)."""
    from core.domain.bands import PriceBand

    bands.publish(redis_client, EX, "ETHUSDT", "trailing", PriceBand.empty())
    assert poll_until(lambda: not bands.components(redis_client, EX, "ETHUSDT"), 90), (
        "no worker ran the price task"
    )


def test_a_move_right_after_activation_reaches_trailing_within_a_second_on_bybit(
    venue, stream_settings, workers, redis_client
):
    deps = venue.make_deps(trailing_min_update_interval=0)
    venue.set_price("BTCUSDT", "60000")
    workers.start("w1")
    with StreamThread(stream_settings):
        stream_is_live(redis_client)
        pid = opened(venue, deps)
        assert bands.components(redis_client, EX, "BTCUSDT")  # published by the activation
        [first_stop] = live_triggers(venue.sim)
        moved_at = time.monotonic()
        venue.set_price("BTCUSDT", "61800")  # +3 %: activation at 1.5 %, callback 0.5 %
        moved = poll_until(
            lambda: live_triggers(venue.sim) != [first_stop] and live_triggers(venue.sim), 1.0
        )
        reacted = time.monotonic() - moved_at
    print(f"\nBybit, +3 % after activation: stop moved {reacted:.2f} s after the price move")
    assert moved == [Decimal("61491")], f"no move within 1 s ({live_triggers(venue.sim)})"
    assert move_count(pid) == 1


def _stop_fill_during_outage(venue, stream_settings, workers, redis_client, down, up):
    deps = venue.make_deps(trailing_min_update_interval=0)
    venue.set_price("BTCUSDT", "60000")
    workers.start("w1")
    with StreamThread(stream_settings):
        stream_is_live(redis_client)
        pid = opened(venue, deps)
        [stop] = live_triggers(venue.sim)
        down()
        down_at = time.monotonic()
        venue.set_price("BTCUSDT", str(stop - 100))  # through the stop while the store is down
        assert poll_until(lambda: not live_triggers(venue.sim), 10), "the stop did not fire"
        time.sleep(max(0.0, down_at + 20 - time.monotonic()))
        up()
        up_at = time.monotonic()
        closed = poll_until(lambda: _closed_or_none(pid), 120, step=0.5)
        settled_s = time.monotonic() - up_at
    return pid, closed, settled_s, Decimal(stop - 100)


@pytest.mark.timeout(600)
def test_a_stop_that_fills_during_a_postgres_outage_is_a_stop_on_bybit(
    venue, stream_settings, workers, redis_client, postgres_server
):
    pid, closed, settled_s, fill = _stop_fill_during_outage(
        venue, stream_settings, workers, redis_client,
        postgres_server.stop, postgres_server.start,
    )  # fmt: skip
    print(f"\nBybit, 20 s PostgreSQL outage: closed {settled_s:.1f} s after it ended: {closed}")
    assert closed is not None, f"still not closed: {closed_as(pid)}"
    _, reason, exit_price, pnl = closed
    assert reason == "stop_triggered" and exit_price == fill and pnl is not None
    assert "stop_triggered" in event_types(pid)


@pytest.mark.timeout(600)
def test_a_stop_that_fills_during_a_redis_outage_is_a_stop_on_bybit(
    venue, stream_settings, workers, redis_client, redis_server
):
    pid, closed, settled_s, fill = _stop_fill_during_outage(
        venue, stream_settings, workers, redis_client,
        redis_server.kill, redis_server.start,
    )  # fmt: skip
    print(f"\nBybit, 20 s Redis outage: closed {settled_s:.1f} s after it ended: {closed}")
    assert closed is not None, f"still not closed: {closed_as(pid)}"
    _, reason, exit_price, pnl = closed
    assert reason == "stop_triggered" and exit_price == fill and pnl is not None
    assert "stop_triggered" in event_types(pid)
