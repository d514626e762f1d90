"""A burst frame (every symbol leaves its band at once, as on a 1 Hz all-market feed), with
real parts: the ingest's gate on Redis and the Celery broker, a real worker process, the
paper exchange.

What a burst must not do: queue one task per symbol and run them one after another on a
busy pool while each mostly waits on the exchange, so that the last symbol's move waits
behind all the others. The frame's symbols go a few per task, and one pool process runs a
task's symbols at once, each under its own lock with its own window and flag.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from core import task_names as names
from core.config import get_settings
from core.db.models import Event, TrailingStop
from core.db.session import unit_of_work
from core.domain.bands import PriceBand
from core.ingest.prices import BandCache, PriceGate, PriceStream
from core.services import bands, price_path
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tasks.sender import celery_sender
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration
EX = "binance"
NOW_MS = 1_700_000_000_000


def feed_frame(redis_url, client, frame, per_task):
    """One frame through a PriceGate on Redis and the real broker; its counters."""

    async def scenario():
        async_client = aioredis.Redis.from_url(redis_url)
        cache = BandCache(client, EX)
        await cache.load_all()
        sender = celery_sender(get_settings())
        gate = PriceGate(EX, async_client, cache, sender, pending_ttl_s=30, per_task=per_task)
        try:
            await gate.on_marks(frame, datetime.now(UTC))
            return gate.stats
        finally:
            gate.close()
            await async_client.aclose()

    return asyncio.run(scenario())


def decoded_body(client) -> list[list]:
    """[task name, positional arguments] of each message waiting on the broker's ``stops``
    queue (kombu's base64 JSON body)."""
    out = []
    for raw in client.lrange("stops", 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append([message["headers"]["task"], body[0]])
    return out


def test_a_frame_of_many_symbols_queues_a_few_tasks_carrying_each_symbol_once(
    redis_url, redis_client, clean_db
):
    symbols = [f"S{i:02d}USDT" for i in range(20)]
    for symbol in symbols:
        bands.publish(redis_client, EX, symbol, "trailing", PriceBand(None, Decimal("10")))
    frame = [(symbol, "11", NOW_MS) for symbol in symbols]
    stats = feed_frame(redis_url, redis_client, frame, per_task=8)
    assert stats.outside == 20 and stats.enqueued == 3  # 7 + 7 + 6, not 20
    queued = decoded_body(redis_client)
    assert [name for name, _ in queued] == [names.ON_PRICES] * 3
    carried = [symbol for _, (exchange, group) in queued for symbol in group]
    assert sorted(carried) == symbols and sorted(len(g) for _, (_, g) in queued) == [6, 7, 7]
    # each symbol's flag is held: its next ticks join its window, nothing more is queued
    stats = feed_frame(redis_url, redis_client, [(s, "12", NOW_MS + 1) for s in symbols], 8)
    assert stats.enqueued == 0 and redis_client.llen("stops") == 3
    assert price_path.take_window(redis_client, EX, "S05USDT").ticks == 2


def test_a_lone_symbol_and_a_batch_size_of_one_queue_as_before(redis_url, redis_client, clean_db):
    for symbol in ("AUSDT", "BUSDT", "CUSDT"):
        bands.publish(redis_client, EX, symbol, "trailing", PriceBand(None, Decimal("10")))
    feed_frame(redis_url, redis_client, [("AUSDT", "11", NOW_MS)], per_task=8)
    frame = [("BUSDT", "11", NOW_MS), ("CUSDT", "11", NOW_MS)]
    stats = feed_frame(redis_url, redis_client, frame, per_task=1)
    assert stats.enqueued == 2
    queued = decoded_body(redis_client)
    assert [name for name, _ in queued] == [names.ON_PRICE] * 3
    assert sorted(args[1] for _, args in queued) == ["AUSDT", "BUSDT", "CUSDT"]


@pytest.mark.parametrize(("spread_from", "tasks"), [(2, (2, 2)), (4, (1, 2))])
def test_the_ingest_spreads_a_frame_over_the_slots_from_the_settings_size_on(
    redis_url, redis_client, clean_db, spread_from, tasks
):
    """As ``PriceStream`` builds its gate from the settings: by default a frame of two symbols
    goes to both stops pool processes; with ``VIGIL_PRICE_TASK_SPREAD_FROM=4`` a frame of two
    or three rides in one task (one task's Celery cost) and one of four is spread."""
    settings = get_settings().model_copy(update={"price_task_spread_from": spread_from})
    symbols = ["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT"]
    for symbol in symbols:
        bands.publish(redis_client, EX, symbol, "trailing", PriceBand(None, Decimal("10")))

    async def scenario():
        async_client = aioredis.Redis.from_url(redis_url)
        sender = celery_sender(settings)
        pro = SimpleNamespace(id="binanceusdm", get_ws_url=lambda *_: "ws://127.0.0.1:9/ws")
        stream = PriceStream(settings, EX, pro, async_client, redis_client, sender)
        await stream.bands.load_all()
        try:
            two = await stream.gate.on_marks([(s, "11", NOW_MS) for s in symbols[:2]], now())
            four = await stream.gate.on_marks([(s, "11", NOW_MS) for s in symbols[2:]], now())
            return two, four
        finally:
            stream.gate.close()
            await async_client.aclose()

    assert asyncio.run(scenario()) == tasks
    groups = sorted(
        sorted(group) if isinstance(group, list) else [group]
        for _, (_, group) in decoded_body(redis_client)
    )
    pair = [["AUSDT", "BUSDT"]] if spread_from == 4 else [["AUSDT"], ["BUSDT"]]
    assert groups == sorted([*pair, ["CUSDT", "EUSDT"], ["DUSDT", "FUSDT"]])


def now():
    return datetime.now(UTC)


# --- the burst through a worker of one process ------------------------------------------

BURST = {"ETHUSDT": "3000", "BNBUSDT": "600", "SOLUSDT": "150", "LINKUSDT": "15"}


@pytest.fixture
def one_process_worker(sim, clean_db, redis_url, tmp_path):
    """A ``stops`` worker with ONE pool process (prefork), as `vigil worker` runs it."""
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL="0",
        VIGIL_EXCHANGE_TIMEOUT_MS="10000",
    )
    with Processes(env, stop_signal=signal.SIGKILL) as processes:
        yield processes.worker(
            *("--queues", "stops", "--name", "burst", "--pool", "prefork", "--concurrency", "1")
        )


def wait_for(probe, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def live_triggers(sim, symbol):
    return [
        Decimal(o["triggerPrice"]) for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol
    ]


class RunningWatch:
    """Polls Redis for the symbols whose price run is in progress (flag ``running``)."""

    def __init__(self, client, symbols):
        self.client, self.symbols = client, symbols
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        keys = [price_path.pending_key(EX, s) for s in self.symbols]
        while not self._stop.is_set():
            running = sum(v == b"running" for v in self.client.mget(keys))
            self.most = max(self.most, running)
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def open_burst(sim, make_deps, redis_client):
    """BURST's positions open with live stops, bands published and no run in progress; the
    stops before the burst and the lifted prices (every stop then moves)."""
    deps = make_deps(trailing_min_update_interval=0)
    ids = {}
    for symbol, price in BURST.items():
        sim.set_price(symbol, price)
        with unit_of_work() as s:
            ids[symbol] = create_position(s, NewPosition(EX, symbol, "long")).id
        assert open_position(deps, ids[symbol]) is OpenOutcome.ACTIVE
    send = celery_sender(get_settings())
    price_path.sweep(deps, lambda ex, symbol: send(names.ON_PRICE, (ex, symbol)))
    wait_for(lambda: all(bands.components(redis_client, EX, s) for s in BURST), what="bands")
    wait_for(lambda: redis_client.llen("stops") == 0, what="the sweep's runs")
    wait_until_no_run(redis_client, "the sweep's runs to end")
    before = {s: live_triggers(sim, s) for s in BURST}
    lifted = {s: str(Decimal(p) * Decimal("1.03")) for s, p in BURST.items()}
    for symbol, price in lifted.items():
        sim.set_price(symbol, price)
    return ids, before, lifted


def wait_until_no_run(redis_client, what):
    wait_for(
        lambda: not any(redis_client.exists(price_path.pending_key(EX, s)) for s in BURST),
        what=what,
    )


def test_a_burst_runs_every_symbols_move_at_once_on_one_pool_process(
    sim, make_deps, redis_url, redis_client, one_process_worker
):
    ids, before, lifted = open_burst(sim, make_deps, redis_client)
    # every new stop's POST waits a while on the exchange: runs one after another would
    # never be seen in progress together
    sim.fault("algoOrder", "latency", method="POST", latency_ms=1500, count=len(BURST))
    frame = [(s, price, int(time.time() * 1000)) for s, price in lifted.items()]
    with RunningWatch(redis_client, list(BURST)) as watch:
        stats = feed_frame(redis_url, redis_client, frame, per_task=8)
        assert stats.enqueued == 1
        wait_for(lambda: all(live_triggers(sim, s) != before[s] for s in BURST), what="every move")
        wait_for(
            lambda: not any(redis_client.exists(price_path.pending_key(EX, s)) for s in BURST),
            what="every run to end",
        )
    assert watch.most == len(BURST)  # all four in progress at once, on one pool process
    with unit_of_work() as s:
        for symbol, pid in ids.items():
            row = s.get(TrailingStop, pid)
            assert row.state == "active" and row.highest_price == Decimal(lifted[symbol])
            moved = s.scalars(
                select(Event).where(Event.position_id == pid, Event.type == "trailing_stop_updated")
            ).all()
            assert moved, symbol
    for symbol in BURST:  # make-before-break: one live stop each, the new one
        live = live_triggers(sim, symbol)
        assert len(live) == 1 and live[0] > before[symbol][0], (symbol, live, before[symbol])


def test_a_batchs_follow_ups_wait_until_every_run_of_it_has_sent_its_new_stop(
    sim, make_deps, redis_url, redis_client, one_process_worker
):
    """The burst's gate (core/services/send_gate.py): one run's POST is slow on the exchange;
    the batch's other runs, whose POSTs come back at once, cancel their old stops (DELETE)
    only after it came back, so no follow-up competes with a POST still to come."""
    ids, before, lifted = open_burst(sim, make_deps, redis_client)
    since = sim.requests()["next"]
    slow_ms = 400  # below the gate's bound (0.5 s): the others wait for it, not the bound
    sim.fault("algoOrder", "latency", method="POST", latency_ms=slow_ms, count=1)
    frame = [(s, price, int(time.time() * 1000)) for s, price in lifted.items()]
    assert feed_frame(redis_url, redis_client, frame, per_task=8).enqueued == 1
    wait_for(lambda: all(live_triggers(sim, s) != before[s] for s in BURST), what="every move")
    wait_until_no_run(redis_client, "every run to end")
    log = [r for r in sim.requests(since)["requests"] if r["path"].endswith("/algoOrder")]
    posts = [r for r in log if r["method"] == "POST"]
    deletes = [r for r in log if r["method"] == "DELETE"]
    assert len(posts) == len(BURST) and len(deletes) == len(BURST)
    [slow] = [r for r in posts if r["fault"] == "latency"]  # the first POST that arrived
    # every DELETE, the slow run's own included, after the slow POST came back
    assert all(d["time"] >= slow["time"] + slow_ms for d in deletes), (slow, deletes)
    for symbol in BURST:  # make-before-break: one live stop each, the new one
        live = live_triggers(sim, symbol)
        assert len(live) == 1 and live[0] > before[symbol][0], (symbol, live, before[symbol])
