"""Two venues in one deployment (VIGIL_EXCHANGES=binance,bybit): one worker process holds an
adapter per venue, each task acts on its own venue, and each guardian runs per venue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from core.config import get_settings
from core.db.models import Position
from core.db.session import unit_of_work
from core.services.deps import reset_deps
from core.services.positions import NewPosition, create_position
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture
def two_venue_env(sim, bybit_sim, clean_db, redis_url, tmp_path, monkeypatch):
    env = {
        "VIGIL_HOME": str(tmp_path),
        "VIGIL_EXCHANGE": "paper",
        "VIGIL_EXCHANGE_URL": sim.url,
        "VIGIL_EXCHANGES": "binance,bybit",
        "VIGIL_BYBIT_EXCHANGE_URL": bybit_sim.url,
        "VIGIL_EXCHANGE_TIMEOUT_MS": "10000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    reset_deps()
    yield dict(os.environ)
    get_settings.cache_clear()
    reset_deps()


@pytest.fixture
def worker(two_venue_env):
    with Processes(two_venue_env, stop_signal=signal.SIGKILL) as processes:
        yield processes.worker("--pool", "solo", "--name", "both")


def test_one_worker_opens_and_guards_each_position_on_its_own_venue(
    sim, bybit_sim, worker, two_venue_env
):
    from tasks.app import create_app

    celery = create_app(get_settings())

    def run(name, *args):
        return celery.send_task(name, args=list(args), ignore_result=False).get(timeout=90)

    # the worker's start-up recovery fails openings that have not sent an entry yet: let it
    # pass before creating any. It is queued when the worker is ready, which a first answered
    # ping proves (a task sent before that may run before it); one sent after runs after it.
    run("vigil.maintenance.ping")
    started = run("vigil.maintenance.recover_interrupted_openings")
    assert set(started["venues"]) == {"binance", "bybit"}
    sim.set_price("BTCUSDT", "60000")
    bybit_sim.set_price("BTCUSDT", "60000")
    with unit_of_work() as s:
        on_binance = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
        on_bybit = create_position(s, NewPosition("bybit", "BTCUSDT", "long")).id
    assert run("vigil.orders.open_position", on_bybit) == "active", events_on("bybit")
    assert run("vigil.orders.open_position", on_binance) == "active", events_on("binance")
    assert len(sim.state()["positions"]) == 1
    assert len(bybit_sim.state()["positions"]) == 1
    with unit_of_work() as s:
        stops = {
            s.get(Position, pid).exchange: s.get(Position, pid).stop_price
            for pid in (
                on_binance,
                on_bybit,
            )
        }
    assert stops == {"binance": Decimal("58800"), "bybit": Decimal("58800")}

    guarded = run("vigil.maintenance.protection_check")
    assert set(guarded["venues"]) == {"binance", "bybit"}
    for venue in ("binance", "bybit"):
        assert guarded["venues"][venue]["positions"] == 1, guarded
        assert guarded["venues"][venue]["healthy"] == 1, guarded

    health, metrics = api_health()
    for venue in ("binance", "bybit"):
        assert f'vigil_venue_positions{{exchange="{venue}",status="active"}} 1.0' in metrics
        assert f'vigil_venue_exchange_up{{exchange="{venue}"}} 1.0' in metrics
        assert f'vigil_venue_unprotected_positions{{exchange="{venue}"}} 0.0' in metrics
    for name in ("exchange", "exchange:bybit", "unprotected_positions:bybit"):
        assert health["components"][name]["status"] == "ok", health
    assert health["components"]["exchange:bybit"]["open_orders"] == 1  # its stop

    sim.admin("POST", "/_sim/close_position", {"symbol": "BTCUSDT"})  # by hand, on Binance
    synced = run("vigil.maintenance.reconciliation")
    assert synced["venues"]["binance"]["exchange_positions"] == 0
    assert synced["venues"]["bybit"]["exchange_positions"] == 1
    with unit_of_work() as s:
        assert s.get(Position, on_bybit).status == "active"  # the other venue is untouched

    diagnosed = subprocess.run(
        [sys.executable, "-m", "shell.cli", "diagnose", "--json"],
        env=two_venue_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert diagnosed.returncode == 0, diagnosed.stdout + diagnosed.stderr
    venues = json.loads(diagnosed.stdout)["venues"]
    assert venues["bybit"]["positions_checked"] == 1 and venues["binance"]["positions_checked"] == 0

    closed = subprocess.run(
        [sys.executable, "-m", "shell.cli", "close", "BTCUSDT", "--exchange", "bybit", "--yes"],
        env=two_venue_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert bybit_sim.state()["positions"] == []
    with unit_of_work() as s:
        position = s.get(Position, on_bybit)
        assert (position.status, position.close_reason) == ("closed", "manual")


def api_health() -> tuple[dict, str]:
    """``/health`` and ``/metrics`` of an API built from the two-venue environment."""
    from core.api.app import create_app
    from tests.integration.test_api import Served

    served = Served(create_app(get_settings(), worker_ping=lambda timeout: ["w"]))
    try:
        return served.request("GET", "/health")[1], served.request("GET", "/metrics")[1]
    finally:
        served.stop()


def events_on(venue: str) -> str:
    """The venue's events, one a line (shown when an assertion fails)."""
    from sqlalchemy import select

    from core.db.models import Event

    with unit_of_work() as s:
        found = [(e.type, e.exchange, e.data) for e in s.scalars(select(Event).order_by(Event.id))]
    return "\n".join(str(f) for f in found if f[1] == venue)


def test_settings_and_the_ingest_know_both_venues_and_refuse_a_bad_configuration(
    two_venue_env, redis_client
):
    def vigil(*args, **env):
        return subprocess.run(
            [sys.executable, "-m", "shell.cli", *args],
            env={**two_venue_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = vigil("settings", "set", "BTCUSDT", "leverage=3", "--exchange", "bybit")
    assert done.returncode == 0, done.stderr
    assert "BTCUSDT on bybit" in done.stdout
    shown = vigil("settings", "show", "--exchange", "bybit")
    assert "leverage=3" in shown.stdout
    assert "leverage=3" not in vigil("settings", "show", "--exchange", "binance").stdout

    same_url = vigil("worker", VIGIL_BYBIT_EXCHANGE_URL=two_venue_env["VIGIL_EXCHANGE_URL"])
    assert same_url.returncode == 2
    assert "venues binance and bybit share the URL" in same_url.stderr
    one_venue = vigil("ingest", "--exchange", "bybit", VIGIL_EXCHANGES="binance")
    assert one_venue.returncode == 2
    assert "venue bybit is not configured" in one_venue.stderr
