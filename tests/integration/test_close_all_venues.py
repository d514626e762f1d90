"""Closing everything in a two-venue deployment (VIGIL_EXCHANGES=binance,bybit): ``POST
/close-all`` and ``vigil close --all`` close on every venue (or on the one named), behind one
halt, each through its own venue's paper exchange."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import SecretStr

from core import metrics
from core.api.app import create_app
from core.db.session import unit_of_work
from core.services import halts
from core.services.deps import deps_for, get_deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tests.integration.test_api import TOKEN, Served
from tests.integration.test_two_venues import two_venue_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
VENUES = ("binance", "bybit")


def _open_everywhere(sim: Any, bybit_sim: Any) -> dict[str, int]:
    opened = {}
    for venue, exchange in (("binance", sim), ("bybit", bybit_sim)):
        exchange.set_price("BTCUSDT", "60000")
        with unit_of_work() as s:
            opened[venue] = create_position(s, NewPosition(venue, "BTCUSDT", "long")).id
        assert open_position(deps_for(venue), opened[venue]) is OpenOutcome.ACTIVE
    return opened


@pytest.fixture
def served(two_venue_env, redis_client):  # noqa: F811
    metrics.configure_metrics(redis_client)
    deps = get_deps()
    app = create_app(
        deps.settings.model_copy(update={"api_token": SecretStr(TOKEN), "health_cache_seconds": 0}),
        deps_factory=lambda: deps,
        redis_client=redis_client,
        worker_ping=lambda timeout: ["worker1@host"],
    )
    running = Served(app)
    yield running
    running.stop()
    metrics.configure_metrics(None)


def test_close_all_by_api_closes_on_every_venue_behind_one_halt(sim, bybit_sim, served):
    opened = _open_everywhere(sim, bybit_sim)

    status, body = served.request("POST", "/close-all?dry_run=true", headers=AUTH)
    assert status == 200, body
    assert {p["exchange"] for p in body["positions"]} == set(VENUES)
    assert halts.current() == []

    status, body = served.request("POST", "/close-all?exchange=kraken", headers=AUTH)
    assert status == 400 and "kraken" in body["error"], body

    status, body = served.request("POST", "/close-all", headers=AUTH)
    assert status == 200, body
    assert body["closed"] == 2 and body["not_closed"] == 0
    assert {p["position_id"] for p in body["positions"]} == set(opened.values())
    assert sim.state()["positions"] == [] and bybit_sim.state()["positions"] == []
    assert len(halts.current()) == 1


def test_close_all_by_api_on_one_venue_leaves_the_other(sim, bybit_sim, served):
    _open_everywhere(sim, bybit_sim)
    status, body = served.request("POST", "/close-all?exchange=bybit", headers=AUTH)
    assert status == 200, body
    assert [p["exchange"] for p in body["positions"]] == ["bybit"]
    assert bybit_sim.state()["positions"] == []
    assert len(sim.state()["positions"]) == 1


def test_vigil_close_all_closes_on_every_venue(sim, bybit_sim, two_venue_env):  # noqa: F811
    _open_everywhere(sim, bybit_sim)
    done = subprocess.run(
        [sys.executable, "-m", "shell.cli", "close", "--all", "--yes"],
        env=two_venue_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "binance" in done.stdout and "bybit" in done.stdout
    assert sim.state()["positions"] == [] and bybit_sim.state()["positions"] == []
