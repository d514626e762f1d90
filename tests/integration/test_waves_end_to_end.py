"""Signal source -> ingest -> Celery worker -> paper exchange: a wave opens its top N, each
with exactly one live stop for its filled quantity, once, whatever the extra deliveries;
every step is in the event log under one correlation id per signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from core.config import get_settings, load_settings
from core.db.models import Event, Position, Signal, Wave
from core.db.session import unit_of_work
from core.ingest.context import PROCESS_WAVE_TASK, IngestContext
from core.ingest.process import BackgroundIngest
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration

WAVE_ENV = {
    "VIGIL_WAVE_INTERVAL": "2",
    "VIGIL_WAVE_GRACE": "0",
    "VIGIL_MAX_TRADES_PER_WAVE": "3",
    "VIGIL_WAVE_BUFFER": "1",
    "VIGIL_POSITION_SIZE_USDT": "200",
    "VIGIL_ENTRY_FILL_TIMEOUT": "2",
}


def wait_until(predicate, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def start_worker(sim, clean_db, redis_url, tmp_path):
    """Start a Celery worker subprocess (its own process group, so a kill takes its pool)."""
    env = {
        **os.environ,
        "VIGIL_HOME": str(tmp_path),
        "VIGIL_EXCHANGE": "paper",
        "VIGIL_EXCHANGE_URL": sim.url,
        "VIGIL_EXCHANGE_TIMEOUT_MS": "20000",
        **WAVE_ENV,
    }
    with Processes(env) as processes:

        def start(name: str, **env_overrides: str) -> subprocess.Popen:
            queues = ("--queues", "signals,orders,maintenance", "--concurrency", "4")
            return processes.worker("--name", name, *queues, **env_overrides)

        yield start


@pytest.fixture
def worker(start_worker):
    return start_worker("wave-e2e")


def test_a_wave_from_the_signal_source_opens_its_top_n_once_each_with_one_stop(
    sim, signal_source, worker
):
    from tasks.app import create_app

    signal_source.admin("POST", "/_sim/config", {"paused": True})
    celery = create_app(get_settings())
    sent: list[int] = []

    def enqueue(name: str, args: Any) -> None:
        celery.send_task(name, args=list(args))
        if name == PROCESS_WAVE_TASK:
            sent.append(args[0])
            for _ in range(5):  # duplicate deliveries racing the real one
                celery.send_task(name, args=list(args))

    settings = load_settings(
        signal_url=signal_source.ws_url,
        signal_token=signal_source.token,
        **{k.removeprefix("VIGIL_").lower(): v for k, v in WAVE_ENV.items()},
    )
    ctx = IngestContext(settings, "binance", enqueue)
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ranked = [("BTCUSDT", 90), ("ETHUSDT", 85), ("SOLUSDT", 80), ("BNBUSDT", 75), ("XRPUSDT", 70)]
    with BackgroundIngest(ctx, price_stream=False):
        wait_until(lambda: ctx.status.signal_connected, 15, "the ingest connected")
        signal_source.emit(
            signals=[
                {"id": f"e2e-{i}", "symbol": symbol, "score_week": score, "timestamp": moment}
                for i, (symbol, score) in enumerate(ranked)
            ],
            batch=True,
        )
        wave_id = wait_until(lambda: sent and sent[0], 30, "the wave dispatched")

        def completed() -> bool:
            with unit_of_work() as s:
                return s.get(Wave, wave_id).status == "completed"

        wait_until(completed, 90, "the wave completed")
        # a late delivery after completion changes nothing either
        celery.send_task(PROCESS_WAVE_TASK, args=[wave_id])
        wait_until(lambda: len(events_of("wave_duplicate_detected")) >= 6, 30, "duplicates seen")

    with unit_of_work() as s:
        positions = list(s.scalars(select(Position).order_by(Position.id)))
        rows = {r.signal_id: r for r in s.scalars(select(Signal))}
    assert sorted(p.symbol for p in positions) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert {p.status for p in positions} == {"active"}
    assert [rows[f"e2e-{i}"].status for i in range(5)] == [
        "opened",
        "opened",
        "opened",
        "filtered",
        "filtered",
    ]
    state = sim.state()
    held = {
        p["symbol"]: abs(Decimal(p["positionAmt"]))
        for p in state["positions"]
        if Decimal(p["positionAmt"]) != 0
    }
    assert held == {p.symbol: p.quantity for p in positions}
    for symbol, quantity in held.items():
        stops = [o for o in state["open_algo_orders"] if o["symbol"] == symbol]
        assert [Decimal(o["quantity"]) for o in stops] == [quantity]
    entries = [
        r
        for r in sim.requests()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/order")
    ]
    assert len(entries) == 3
    assert len(events_of("wave_started")) == 1 and len(events_of("wave_completed")) == 1
    for i in range(3):
        correlation = rows[f"e2e-{i}"].correlation_id
        with unit_of_work() as s:
            chain = list(
                s.scalars(
                    select(Event.type).where(Event.correlation_id == correlation).order_by(Event.id)
                )
            )
        for step in (
            "signal_received",
            "signal_selected",
            "position_created",
            "entry_order_placed",
            "entry_order_filled",
            "stop_loss_placed",
            "signal_executed",
        ):
            assert step in chain, (step, chain)
        assert chain.index("signal_received") < chain.index("position_created")
        assert chain.index("position_created") < chain.index("stop_loss_placed")


def events_of(event_type: str) -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == event_type)))


def test_a_worker_killed_mid_wave_leaves_it_resumable_without_duplicates(
    sim, make_deps, start_worker
):
    """SIGKILL while the openings wait for their stops; a new worker recovers the openings
    and beat's dispatcher resumes the stalled wave to completion."""
    from core.domain.signals import parse_frame
    from core.services.signals import store_frame
    from core.services.waves import wave_params
    from tasks.app import create_app

    celery = create_app(get_settings())
    deps = make_deps(wave_interval=60, wave_grace=0, max_trades_per_wave=2, wave_buffer=1)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=30)
    frame = {
        "type": "signals",
        "signals": [
            {
                "id": f"k-{i}",
                "symbol": symbol,
                "exchange": "binance",
                "action": "BUY",
                "score_week": 90 - i,
                "score_month": 50,
                "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for i, symbol in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
        ],
    }
    report = store_frame(
        parse_frame(json.dumps(frame), now=datetime.now(UTC)),
        now=datetime.now(UTC),
        params=wave_params(deps.settings),
    )
    wave_id = report.stored[0].wave_id
    sim.fault("algoOrder", "latency", method="POST", latency_ms=3000, count=2)
    env = {"VIGIL_WAVE_INTERVAL": "60", "VIGIL_MAX_TRADES_PER_WAVE": "2", "VIGIL_LOCK_TIMEOUT": "5"}
    victim = start_worker("victim", **env)
    celery.send_task(PROCESS_WAVE_TASK, args=[wave_id])

    def statuses() -> list[str]:
        with unit_of_work() as s:
            return [p.status for p in s.scalars(select(Position).order_by(Position.id))]

    wait_until(lambda: statuses() == ["pending_sl", "pending_sl"], 60, "both stops in flight")
    time.sleep(0.3)  # the stop requests are on the wire now
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert statuses() == ["pending_sl", "pending_sl"]

    # a new worker: recovery at its start protects both openings; beat resumes the wave
    start_worker("rescuer", **env, VIGIL_WAVE_STALL_SECONDS="1")
    wait_until(lambda: statuses() == ["active", "active"], 60, "openings recovered")

    beat_sent = [0.0]

    def wave_status() -> str:
        if time.monotonic() - beat_sent[0] >= 0.5:  # what beat sends, on a short cadence
            celery.send_task("vigil.maintenance.dispatch_due_waves")
            beat_sent[0] = time.monotonic()
        with unit_of_work() as s:
            return s.get(Wave, wave_id).status

    wait_until(lambda: wave_status() == "completed", 60, "the wave resumed and completed")
    time.sleep(3.5)  # let the requests that died with the victim land (or not)

    state = sim.state()
    held = {
        p["symbol"]: abs(Decimal(p["positionAmt"]))
        for p in state["positions"]
        if Decimal(p["positionAmt"]) != 0
    }
    assert set(held) == {"BTCUSDT", "ETHUSDT"}
    for symbol, quantity in held.items():
        stops = [o for o in state["open_algo_orders"] if o["symbol"] == symbol]
        assert [Decimal(o["quantity"]) for o in stops] == [quantity]
    with unit_of_work() as s:
        rows = {r.signal_id: r.status for r in s.scalars(select(Signal))}
    assert rows == {"k-0": "opened", "k-1": "opened", "k-2": "filtered"}
    assert len(events_of("wave_resumed")) >= 1
