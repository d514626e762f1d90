"""The compose healthchecks, run for real against the processes they check.

Docker is not run here; the commands the compose file gives are: the paper exchange's
(dialect-aware) and ``vigil healthcheck beat|ingest`` (heartbeats).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from core.clock import SYSTEM_CLOCK
from core.db.session import unit_of_work
from core.services import heartbeat

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def sim_healthcheck(port: int, dialect: str, service: str = "sim", listens: int = 8710) -> int:
    """A paper exchange service's healthcheck command, pointed at ``port``, in a
    container-like env."""
    test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]
    argv = test["healthcheck"]["test"][1:]
    assert argv[:2] == ["python", "-c"]
    code = argv[2].replace(f"127.0.0.1:{listens}", f"127.0.0.1:{port}")
    env = {**os.environ, "VIGIL_PAPER_DIALECT": dialect}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode


def test_paper_exchange_healthcheck_passes_on_either_dialect(sim_server, bybit_sim_server):
    binance_port = int(sim_server.url.rsplit(":", 1)[1].strip("/"))
    bybit_port = int(bybit_sim_server.url.rsplit(":", 1)[1].strip("/"))
    assert sim_healthcheck(binance_port, "binance") == 0
    assert sim_healthcheck(bybit_port, "bybit") == 0
    # and it does check: the Binance route is not there on a Bybit exchange
    assert sim_healthcheck(bybit_port, "binance") != 0
    # the second venue's paper exchange (profile two-venues) always speaks Bybit
    assert sim_healthcheck(bybit_port, "binance", "sim-bybit", 8711) == 0
    assert sim_healthcheck(binance_port, "binance", "sim-bybit", 8711) != 0


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VIGIL_EXCHANGE": "paper", "VIGIL_PAPER_DIALECT": "binance"},
        timeout=120,
    )


def seen(component: str, ago: timedelta) -> None:
    with unit_of_work() as session:
        heartbeat.beat(session, component, SYSTEM_CLOCK.now() - ago)


@pytest.mark.parametrize("component,row", [("beat", "beat"), ("ingest", "ingest:binance")])
def test_healthcheck_follows_the_heartbeat(clean_db, component: str, row: str) -> None:
    missing = vigil("healthcheck", component)
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr
    seen(row, timedelta(seconds=1))
    assert vigil("healthcheck", component).returncode == 0
    seen(row, timedelta(minutes=10))  # older than the default 60 s
    stale = vigil("healthcheck", component)
    assert stale.returncode == 1 and "stale" in stale.stderr
