"""A durable paper account: `vigil sim` killed (SIGKILL) and started again on the same state
file has the same wallet, positions, open and stop orders, trades and id counters, on both
dialects; `/_sim/reset` empties it; a file of the other dialect is refused, not loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shell.runtime.embedded import free_port

pytestmark = pytest.mark.integration


class SimProcess:
    def __init__(self, tmp: Path, dialect: str, state: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "shell.cli", "sim", "--port", str(self.port)]
        argv += ["--dialect", dialect, "--state", str(state), "--scenario", "frozen"]
        env = dict(os.environ, VIGIL_HOME=str(tmp))
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin("GET", "/_sim/state")
                return
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def stop_body(dialect: str) -> dict[str, Any]:
    common = {"symbol": "BTCUSDT", "side": "SELL", "reduceOnly": True}
    if dialect == "bybit":
        return {**common, "qty": "0.01", "triggerPrice": "58000"}
    return {**common, "type": "STOP_MARKET", "triggerPrice": "58000", "quantity": "0.01"}


def place_stop(sim: SimProcess, dialect: str) -> Any:
    """Bybit shows a new position only after a delay: its stop is refused until then."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return sim.admin("POST", "/_sim/order", stop_body(dialect))
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def account(sim: SimProcess) -> dict[str, Any]:
    state = sim.admin("GET", "/_sim/state")
    return {k: v for k, v in state.items() if k not in ("requests", "faults", "listen_keys")}


@pytest.mark.parametrize("dialect", ["binance", "bybit"])
def test_the_account_survives_a_kill_9_of_the_simulator(tmp_path, dialect):
    state = tmp_path / "paper.account"
    sim = SimProcess(tmp_path, dialect, state)
    try:
        sim.admin("POST", "/_sim/price", {"symbol": "BTCUSDT", "price": "60000"})
        sim.admin(
            "POST", "/_sim/open_position", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}
        )
        place_stop(sim, dialect)
        sim.admin("POST", "/_sim/price", {"symbol": "BTCUSDT", "price": "61000"})
        before = account(sim)
        assert before != account_of_fresh(tmp_path, dialect)
    finally:
        sim.kill()

    sim = SimProcess(tmp_path, dialect, state)
    try:
        assert account(sim) == before
        placed = place_stop(sim, dialect)
        assert json.dumps(placed) not in json.dumps(before)  # a new id, not a reused one
        sim.admin("POST", "/_sim/reset", {})
        empty = account(sim)
    finally:
        sim.kill()
    sim = SimProcess(tmp_path, dialect, state)
    try:
        assert account(sim) == empty  # the reset is what was kept
    finally:
        sim.kill()


def account_of_fresh(tmp: Path, dialect: str) -> dict[str, Any]:
    sim = SimProcess(tmp, dialect, tmp / f"fresh-{dialect}.account")
    try:
        sim.admin("POST", "/_sim/price", {"symbol": "BTCUSDT", "price": "61000"})
        return account(sim)
    finally:
        sim.kill()


def test_an_account_of_the_other_dialect_is_set_aside_not_loaded(tmp_path):
    state = tmp_path / "paper.account"
    sim = SimProcess(tmp_path, "binance", state)
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}
    )
    sim.kill()
    sim = SimProcess(tmp_path, "bybit", state)
    try:
        assert account(sim)["positions"] == []
        assert (tmp_path / "paper.account.unreadable").exists()
    finally:
        sim.kill()
