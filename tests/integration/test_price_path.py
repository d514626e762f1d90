"""The price path with real parts: the ingest's gate on Redis and the Celery broker, the
price stream on the paper exchange's WebSocket, and the whole loop through a worker."""

import asyncio
import os
import signal
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.config import get_settings, load_settings
from core.db.models import Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.ingest.prices import BandCache, PriceGate, run_price_stream
from core.services import bands, price_path
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tasks.sender import celery_sender
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration
EX = "binance"
NOW_MS = 1_700_000_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)


def wait_for(probe, timeout=20.0, what="condition"):
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def queued_price_tasks(client: redis.Redis) -> int:
    return client.llen("stops")  # the Celery queue, in the Redis broker


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def tick(symbol, price, tick_ms):
    """One tick as a venue's frame carries it: the price as text."""
    return (symbol, str(price), tick_ms)


def run_gate(redis_url, client, frames):
    """Feed frames of ticks through a PriceGate wired to Redis and the real broker.

    Returns the gate's counters and the number of Redis commands the frames cost (the
    server's own count, less the INFO that reads it).
    """

    async def scenario():
        async_client = aioredis.Redis.from_url(redis_url)
        cache = BandCache(client, EX)
        await cache.load_all()
        gate = PriceGate(EX, async_client, cache, celery_sender(get_settings()), pending_ttl_s=30)
        try:
            before = commands_processed(client)
            for frame in frames:
                await gate.on_marks(frame, datetime.now(UTC))
            return gate.stats, commands_processed(client) - before - 1
        finally:
            gate.close()
            await async_client.aclose()

    return asyncio.run(scenario())


def test_ticks_inside_the_band_cost_no_redis_call_and_queue_nothing(redis_url, redis_client):
    band = PriceBand(Decimal("59000"), Decimal("61000"))
    bands.publish(redis_client, EX, "BTCUSDT", "trailing", band)
    frames = [[tick("BTCUSDT", Decimal(59500 + i), NOW_MS + i)] for i in range(50)]
    frames.append([tick("ETHUSDT", Decimal("3000"), NOW_MS)])  # an untracked symbol
    stats, commands = run_gate(redis_url, redis_client, frames)
    assert stats.ticks == 51 and stats.outside == 0 and stats.enqueued == 0
    assert commands == 0
    assert queued_price_tasks(redis_client) == 0
    assert not redis_client.exists(price_path.window_key(EX, "BTCUSDT"))


def test_a_burst_outside_the_band_queues_one_task_that_sees_its_high_and_low(
    redis_url, redis_client
):
    bands.publish(redis_client, EX, "BTCUSDT", "trailing", PriceBand(None, Decimal("61000")))
    burst = [Decimal(61000 + (i * 37) % 500) for i in range(100)]
    frames = [[tick("BTCUSDT", price, NOW_MS + i * 10)] for i, price in enumerate(burst)]
    stats, commands = run_gate(redis_url, redis_client, frames)
    assert stats.outside == 100 and stats.enqueued == 1
    assert commands >= 100  # the same count sees each tick that matters (control)
    assert queued_price_tasks(redis_client) == 1
    window = price_path.take_window(redis_client, EX, "BTCUSDT")
    assert (window.high, window.low, window.last) == (max(burst), min(burst), burst[-1])
    assert window.ticks == 100
    assert window.first_tick_at.timestamp() * 1000 == NOW_MS
    # while the task runs (flag held), ticks only join its window: nothing else is queued
    stats, _ = run_gate(redis_url, redis_client, [[tick("BTCUSDT", Decimal("61600"), NOW_MS)]])
    assert stats.enqueued == 0 and queued_price_tasks(redis_client) == 1
    # that tick is outside the band the run published: the run queues its successor
    new_band = PriceBand(None, Decimal("61500"))
    end = price_path.finish_window(redis_client, EX, "BTCUSDT", new_band, NOW, ttl_s=30)
    assert end is price_path.RunEnd.SUCCESSOR
    window = price_path.take_window(redis_client, EX, "BTCUSDT")
    assert (window.high, window.low, window.ticks) == (Decimal("61600"), burst[-1], 1)
    # a run whose window got no tick, or only ticks inside its new band, releases the flag
    stats, _ = run_gate(redis_url, redis_client, [[tick("BTCUSDT", Decimal("61650"), NOW_MS)]])
    higher = PriceBand(None, Decimal("62000"))
    end = price_path.finish_window(redis_client, EX, "BTCUSDT", higher, NOW, ttl_s=30)
    assert end is price_path.RunEnd.RELEASED
    assert window_ticks(redis_client, "BTCUSDT") == 0  # they changed nothing: forgotten
    stats, _ = run_gate(redis_url, redis_client, [[tick("BTCUSDT", Decimal("62100"), NOW_MS)]])
    assert stats.enqueued == 1 and queued_price_tasks(redis_client) == 2


def test_a_database_outage_during_a_run_keeps_its_window_and_flag_for_the_retry(
    sim, deps, redis_url, redis_client, monkeypatch
):
    bands.publish(redis_client, EX, "BTCUSDT", "trailing", PriceBand(None, Decimal("61000")))
    frames = [[tick("BTCUSDT", Decimal(61100 + i), NOW_MS + i)] for i in range(5)]
    stats, _ = run_gate(redis_url, redis_client, frames)
    assert stats.enqueued == 1

    def database_gone(*_args, **_kw):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(price_path, "react_locked", database_gone)
    with pytest.raises(OperationalError):
        price_path.on_price(deps, EX, "BTCUSDT")
    assert redis_client.exists(price_path.pending_key(EX, "BTCUSDT"))  # no second task queued
    window = price_path.take_window(redis_client, EX, "BTCUSDT")
    assert (window.high, window.low, window.ticks) == (Decimal(61104), Decimal(61100), 5)


class StreamThread:
    """``run_price_stream`` in its own thread and event loop, as the ingest runs it."""

    def __init__(self, settings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.loop.run_until_complete(
                run_price_stream(self.settings, self.stop, celery_sender(self.settings))
            )
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "price stream did not stop"
        assert self.error is None, self.error


def window_ticks(client, symbol) -> int:
    value = client.hget(price_path.window_key(EX, symbol), "n")
    return int(value or 0)


@pytest.fixture
def stream_settings(sim, clean_db, redis_url):
    get_settings.cache_clear()
    return load_settings(exchange_url=sim.url, price_band_refresh_interval=5)


def test_the_stream_follows_band_changes_and_reconnects_after_a_drop(
    sim, stream_settings, redis_client
):
    sim.set_price("BTCUSDT", "60000")
    with StreamThread(stream_settings):
        # a symbol whose every tick matters, as the clock of this test
        bands.publish(redis_client, EX, "ETHUSDT", "trailing", PriceBand.empty())
        wait_for(lambda: window_ticks(redis_client, "ETHUSDT") >= 2, what="ETH ticks")
        assert not redis_client.exists(price_path.window_key(EX, "BTCUSDT"))  # untracked

        bands.publish(redis_client, EX, "BTCUSDT", "trailing", PriceBand(None, Decimal("1")))
        wait_for(lambda: window_ticks(redis_client, "BTCUSDT") >= 3, what="BTC tracked")
        assert queued_price_tasks(redis_client) == 2  # one per symbol, however many ticks

        bands.publish(redis_client, EX, "BTCUSDT", "trailing", PriceBand(None, None))
        price_path.take_window(redis_client, EX, "BTCUSDT")
        price_path.take_window(redis_client, EX, "ETHUSDT")
        wait_for(lambda: window_ticks(redis_client, "ETHUSDT") >= 3, what="more ETH ticks")
        assert window_ticks(redis_client, "BTCUSDT") == 0  # inside its new band now

        sim.admin("POST", "/_sim/ws/disconnect")
        wait_for(reconnect_events, what="a reconnect event")
        price_path.take_window(redis_client, EX, "ETHUSDT")
        wait_for(lambda: window_ticks(redis_client, "ETHUSDT") >= 2, what="ticks after it")


def reconnect_events():
    with unit_of_work() as s:
        return s.scalars(select(Event).where(Event.type == "websocket_reconnected")).all()


# --- the whole loop: ingest -> Redis -> worker -> exchange, and the stop firing back ------


@pytest.fixture
def start_worker(sim, clean_db, redis_url, tmp_path):
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL="0",
        VIGIL_EXCHANGE_TIMEOUT_MS="10000",
    )
    with Processes(env, stop_signal=signal.SIGKILL) as processes:

        def start(name="trail"):
            return processes.worker("--queues", "stops,orders", "--pool", "solo", "--name", name)

        yield start


def send_task(name, *args):
    from tasks.app import create_app

    create_app(get_settings()).send_task(name, args=list(args))


def live_triggers(sim, symbol="BTCUSDT"):
    return sorted(
        Decimal(o["triggerPrice"]) for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol
    )


def opened(deps, symbol="BTCUSDT") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, symbol, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def sweep(deps):
    """What beat's trailing sweep does (fresh positions get a price task, hence a band)."""
    return price_path.sweep(deps, lambda ex, symbol: send_task("vigil.stops.on_price", ex, symbol))


def trail_up(sim, steps):
    for price, stop in steps:
        sim.set_price("BTCUSDT", price)
        wait_for(lambda stop=stop: live_triggers(sim) == [Decimal(stop)], what=f"stop {stop}")


def test_rising_price_trails_the_stop_and_a_fall_fires_it_and_the_close_is_recorded(
    sim, make_deps, stream_settings, start_worker, redis_client
):
    deps = make_deps(trailing_min_update_interval=0)
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    start_worker()
    with StreamThread(stream_settings):
        sweep(deps)
        wait_for(lambda: bands.components(redis_client, EX, "BTCUSDT"), what="the band")
        trail_up(sim, [("61000", "60695"), ("61500", "61192.5"), ("62000", "61690")])

        sim.set_price("BTCUSDT", "61500")  # through the stop: it fires on the exchange
        wait_for(lambda: status(pid) == "closed", what="the close to be recorded")
    with unit_of_work() as s:
        p = s.get(Position, pid)
        assert p.close_reason == "stop_triggered" and p.exit_price == Decimal("61500")
        assert p.realized_pnl == (Decimal("61500") - 60000) * p.quantity - p.fees
        assert s.get(TrailingStop, pid) is None
        types = {e.type for e in s.scalars(select(Event).where(Event.position_id == pid))}
    assert {"stop_triggered", "trailing_stop_removed", "position_closed"} <= types
    assert sim.state()["open_algo_orders"] == [] and sim.state()["positions"] == []


def status(pid):
    with unit_of_work() as s:
        return s.get(Position, pid).status


def test_killing_every_process_and_restarting_resumes_each_trailing_stop(
    sim, make_deps, stream_settings, start_worker, redis_client
):
    deps = make_deps(trailing_min_update_interval=0)
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    worker = start_worker("before")
    with StreamThread(stream_settings):
        sweep(deps)
        wait_for(lambda: bands.components(redis_client, EX, "BTCUSDT"), what="the band")
        trail_up(sim, [("61000", "60695"), ("62000", "61690")])
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    for key in redis_client.scan_iter("vigil:*"):  # bands, windows, flags, locks: all gone
        redis_client.delete(key)
    with unit_of_work() as s:
        before = s.get(TrailingStop, pid)

    sim.set_price("BTCUSDT", "61800")  # fell back while everything was down
    start_worker("after")
    with StreamThread(stream_settings):
        sweep(make_deps(trailing_min_update_interval=0))
        wait_for(lambda: bands.components(redis_client, EX, "BTCUSDT"), what="the band again")
        with unit_of_work() as s:
            resumed = s.get(TrailingStop, pid)
        assert (resumed.highest_price, resumed.current_stop, resumed.state) == (
            before.highest_price,
            before.current_stop,
            "active",
        )
        trail_up(sim, [("63000", "62685")])
    with unit_of_work() as s:
        row = s.get(TrailingStop, pid)
        activated = s.scalars(
            select(Event).where(Event.position_id == pid, Event.type == "trailing_stop_activated")
        ).all()
    assert row.update_count == before.update_count + 1 and len(activated) == 1
