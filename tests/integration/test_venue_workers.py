"""A venue with workers of its own (VIGIL_VENUE_QUEUES=bybit, `vigil worker --venue bybit`):
its work waits on its own queues for its own workers, while the shared workers go on with the
other venue's; single-venue routing is unchanged (test_celery_roundtrip, test_two_venues)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from core.config import get_settings
from core.db.models import Position
from core.db.session import unit_of_work
from core.services.deps import reset_deps
from core.services.positions import NewPosition, create_position
from tests.fixtures.processes import Processes
from tests.integration.test_two_venues import two_venue_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def venue_env(two_venue_env, monkeypatch) -> dict[str, str]:  # noqa: F811
    monkeypatch.setenv("VIGIL_VENUE_QUEUES", "bybit")
    get_settings.cache_clear()
    reset_deps()
    return dict(os.environ)


@pytest.fixture
def start_worker(venue_env) -> Iterator[object]:
    with Processes(venue_env, stop_signal=signal.SIGKILL) as processes:
        yield lambda *args: processes.worker("--pool", "solo", *args)


def _status(position_id: int) -> str:
    with unit_of_work() as s:
        position = s.get(Position, position_id)
        assert position is not None
        return position.status


def test_a_venue_with_its_own_queues_is_served_only_by_its_own_workers(
    sim, bybit_sim, start_worker, venue_env, redis_client
):
    from tasks.app import create_app

    celery = create_app(get_settings())
    start_worker("--name", "shared")
    own = start_worker("--venue", "bybit", "--name", "bybit")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answered = [n for reply in celery.control.ping(timeout=1) or [] for n in reply]
        if any(n.startswith("bybit@") for n in answered):
            break
    # every worker's start-up recovery has passed (the shared worker runs them in order)
    recovered = celery.send_task(
        "vigil.maintenance.recover_interrupted_openings", ignore_result=False
    )
    recovered.get(timeout=90)
    os.killpg(own.pid, signal.SIGSTOP)  # the Bybit worker stops taking anything
    sim.set_price("BTCUSDT", "60000")
    bybit_sim.set_price("BTCUSDT", "60000")
    with unit_of_work() as s:
        on_binance = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
        on_bybit = create_position(s, NewPosition("bybit", "BTCUSDT", "long")).id

    bybit_open = celery.send_task(
        "vigil.orders.open_position", args=[on_bybit], ignore_result=False
    )
    binance_open = celery.send_task(
        "vigil.orders.open_position", args=[on_binance], ignore_result=False
    )
    assert binance_open.get(timeout=90) == "active"
    # the shared worker took the Binance opening sent after the Bybit one and is idle again;
    # the Bybit one waits for the Bybit worker (Redis has handed it to that worker's socket)
    time.sleep(2)
    assert _status(on_bybit) == "pending_entry"
    assert bybit_sim.state()["positions"] == []
    assert redis_client.llen("orders") == 0

    os.killpg(own.pid, signal.SIGCONT)
    assert bybit_open.get(timeout=90) == "active"
    assert redis_client.llen("orders.bybit") == 0
    assert len(bybit_sim.state()["positions"]) == 1

    # the Bybit price path goes to the Bybit queue too, and its worker takes it
    price = celery.send_task("vigil.stops.on_price", args=["bybit", "BTCUSDT"])
    deadline = time.monotonic() + 30
    while redis_client.llen("stops.bybit") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_client.llen("stops.bybit") == 0, price.id


def test_a_worker_for_a_venue_without_its_own_queues_is_refused(venue_env):
    done = subprocess.run(
        [sys.executable, "-m", "shell.cli", "worker", "--venue", "binance"],
        env=venue_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "VIGIL_VENUE_QUEUES does not list binance" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "shell.cli", "worker"],
        env={**venue_env, "VIGIL_VENUE_QUEUES": "binance,bybit", "VIGIL_EXCHANGES": "bybit"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "VIGIL_VENUE_QUEUES" in bad.stderr


def test_metrics_measure_a_venue_s_own_queues(venue_env, redis_client):
    from core.api.app import create_app
    from tests.integration.test_api import Served

    redis_client.rpush("stops.bybit", "{}")  # one message waiting (no age header)
    served = Served(create_app(get_settings(), worker_ping=lambda timeout: ["w"]))
    try:
        metrics = served.request("GET", "/metrics")[1]
    finally:
        served.stop()
    assert 'vigil_queue_depth{queue="stops.bybit"} 1.0' in metrics
    assert 'vigil_queue_depth{queue="orders.bybit"} 0.0' in metrics
    assert 'vigil_queue_depth{queue="stops"} 0.0' in metrics
