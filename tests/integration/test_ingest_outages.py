"""The ingest outlives outages in the real processes: after Redis was down, a price move still
reaches the stop through the price stream (not only the beat's sweep), and a fault injected
into the ingest's mark-price loop is answered by a restart, visible in the heartbeat row.

The Redis outage lasts VIGIL_TEST_REDIS_OUTAGE_SECONDS (default 5; docs/reliability.md
records the 20 s run of this test).
"""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import pytest
import redis
from sqlalchemy import select

from core.clock import SYSTEM_CLOCK
from core.config import get_settings, load_settings
from core.db.models import Event, Heartbeat
from core.db.session import unit_of_work
from core.endpoints import embedded_redis_url
from core.exchange.adapter import ExchangeAdapter
from core.exchange.factory import build_exchange
from core.services import bands, price_path
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from shell.runtime.embedded import EmbeddedRedis, free_port
from tests.fixtures.engine import FAST
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration
EX = "binance"
OUTAGE_SECONDS = float(os.environ.get("VIGIL_TEST_REDIS_OUTAGE_SECONDS", "5"))
STOP_BOUND_SECONDS = 2.0  # the bound in which a price move must reach the stop


def wait_for(probe, timeout=30.0, what="condition", poll=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


@pytest.fixture
def own_redis(tmp_path, monkeypatch):
    """A Redis of this test alone (persistent, as `vigil up`'s): the test kills it."""
    server = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    server.start()
    url = embedded_redis_url(server.port)
    monkeypatch.setenv("VIGIL_REDIS_URL", url)
    get_settings.cache_clear()
    yield server, url
    server.stop()
    get_settings.cache_clear()


@pytest.fixture
def processes(sim, clean_db, own_redis, tmp_path):
    """Start ``vigil worker`` / ``vigil ingest`` against the sim, the database, own Redis."""
    _, url = own_redis
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_REDIS_URL=url,
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL="0",
        VIGIL_EXCHANGE_TIMEOUT_MS="10000",
        VIGIL_HEARTBEAT_INTERVAL="1",
    )
    env.pop("VIGIL_SIGNAL_URL", None)
    with Processes(env, stop_signal=signal.SIGKILL, log_dir=tmp_path) as processes:
        yield processes.start


def make_deps(sim, url) -> Deps:
    settings = load_settings(**{**FAST, "exchange_url": sim.url, "trailing_min_update_interval": 0})
    client = build_exchange("paper", url=sim.url, api_key="paper", api_secret="paper")
    client.load_markets()
    return Deps(settings, ExchangeAdapter(client, EX), redis.Redis.from_url(url), SYSTEM_CLOCK)


def live_triggers(sim, symbol="BTCUSDT"):
    return sorted(
        Decimal(o["triggerPrice"]) for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol
    )


def send_task(name, *args):
    from tasks.app import create_app

    create_app(get_settings()).send_task(name, args=list(args))


def move_and_time(sim, price: str, stop: str) -> float:
    """Set the mark price; seconds until the exchange holds the stop the move asks for."""
    started = time.monotonic()
    sim.set_price("BTCUSDT", price)
    wait_for(lambda: live_triggers(sim) == [Decimal(stop)], what=f"stop {stop}", poll=0.02)
    return time.monotonic() - started


def ingest_info() -> dict:
    with unit_of_work() as s:
        row = s.get(Heartbeat, "ingest:binance")
        return dict(row.info or {}) if row is not None else {}


def roundtrip(url: str) -> bool:
    """A ping task answered by the worker: the broker path is back."""
    from tasks.app import create_app
    from tasks.ping import worker_answers

    return worker_answers(create_app(get_settings()), timeout=1.0)


def test_after_a_redis_outage_a_price_move_reaches_the_stop_through_the_stream(
    sim, own_redis, processes
):
    server, url = own_redis
    deps = make_deps(sim, url)
    sim.set_price("BTCUSDT", "60000")
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, "BTCUSDT", "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    processes("worker", "--queues", "stops,orders,maintenance", "--pool", "solo", "--name", "w")
    processes("ingest")
    price_path.sweep(deps, lambda ex, symbol: send_task("vigil.stops.on_price", ex, symbol))
    wait_for(lambda: bands.components(deps.redis, EX, "BTCUSDT"), what="the band")
    before = move_and_time(sim, "61000", "60695")

    server.kill()
    time.sleep(OUTAGE_SECONDS)  # the outage: every tick of it fails in the ingest's gate
    server.start()
    wait_for(lambda: roundtrip(url), what="the broker path back")
    after = move_and_time(sim, "61500", "61192.5")
    print(f"price move to stop: {before:.2f}s before, {after:.2f}s after the outage")
    assert after <= STOP_BOUND_SECONDS, f"{after:.2f}s after a {OUTAGE_SECONDS}s Redis outage"
    loops = ingest_info()["loops"]
    assert loops["mark_prices"]["last_activity_at"] is not None


def test_a_fault_in_the_mark_price_loop_restarts_it_and_the_heartbeat_shows_it(
    sim, own_redis, processes, tmp_path
):
    sim.set_price("BTCUSDT", "60000")
    ingest = processes("ingest")
    wait_for(lambda: ingest_info().get("last_tick_at"), what="a tick in the heartbeat")
    (tmp_path / "ingest-fault").write_text("mark_prices")
    os.kill(ingest.pid, signal.SIGUSR1)
    info = wait_for(
        lambda: (i := ingest_info()) and i["loops"]["mark_prices"]["restarts"] >= 1 and i,
        what="the restart in the heartbeat",
    )
    first = info["last_tick_at"]
    wait_for(lambda: ingest_info()["last_tick_at"] > first, what="ticks after the restart")
    assert ingest.poll() is None
    with unit_of_work() as s:
        [event] = s.scalars(select(Event).where(Event.type == "loop_restarted")).all()
    assert event.data["loop"] == "mark_prices" and "InjectedFault" in event.data["error"]


def price_feed_status() -> str:
    from core.services.health import HealthChecker

    settings = load_settings(price_feed_stale_seconds=10)
    checker = HealthChecker(settings, SYSTEM_CLOCK, lambda: None, None, None, exchange_name=EX)
    return checker.price_feed().status


def test_a_quiet_price_stream_fails_price_feed_within_15s_and_recovers(sim, own_redis, processes):
    sim.set_price("BTCUSDT", "60000")
    with unit_of_work() as s:
        create_position(s, NewPosition(EX, "BTCUSDT", "long"))  # open: the feed matters
    ingest = processes("ingest")
    wait_for(lambda: price_feed_status() == "ok", what="a fresh price feed")
    os.kill(ingest.pid, signal.SIGSTOP)  # the stream goes quiet (a hung process)
    try:
        quiet = time.monotonic()
        wait_for(lambda: price_feed_status() == "fail", timeout=15, what="price_feed failing")
        print(f"price_feed failed {time.monotonic() - quiet:.1f}s after the stream went quiet")
    finally:
        os.kill(ingest.pid, signal.SIGCONT)
    wait_for(lambda: price_feed_status() == "ok", what="price_feed ok again")
