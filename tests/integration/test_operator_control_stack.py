"""Operator control against the whole running system (`vigil up --with-signal-sim` on the
paper exchange: ingest, workers, beat, API), driven as an operator drives it: `vigil halt`,
`vigil resume`, `vigil close --all --yes`, `vigil diagnose` as processes, and a key revoked on
the exchange under the running engine.

The times printed (halt to filtered wave, revoked key to page) are the figures the
operations doc quotes; the test asserts what happened, never how fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from shell.runtime.embedded import free_port
from tests.integration.test_vigil_up import ports_of, processes_of, wait_for_line

pytestmark = pytest.mark.integration

FAST = {
    "VIGIL_EXCHANGE": "paper",
    "VIGIL_WAVE_INTERVAL": "10",
    "VIGIL_WAVE_GRACE": "1",
    "VIGIL_MAX_TRADES_PER_WAVE": "2",
    "VIGIL_WAVE_BUFFER": "1",
    "VIGIL_POSITION_SIZE_USDT": "500",
    "VIGIL_LEVERAGE": "10",
    "VIGIL_PROTECTION_INTERVAL": "4",
    "VIGIL_RECONCILIATION_INTERVAL": "5",
    "VIGIL_ZOMBIE_INTERVAL": "6",
    "VIGIL_HEARTBEAT_INTERVAL": "2",
    "VIGIL_TRAILING_ACTIVATION_PERCENT": "0.6",
    "VIGIL_TRAILING_CALLBACK_PERCENT": "0.3",
    "VIGIL_TRAILING_MIN_UPDATE_INTERVAL": "1",
    "VIGIL_INTERMEDIATE_STATE_GRACE_SECONDS": "15",
    "VIGIL_SIGNAL_TOKEN": "stack-test-token",
}


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll ``probe`` until truthy; the timeout bounds a hang, it is not a speed check."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def settled(outcomes: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The outcomes once every signal has its final one (empty until then)."""
    pending = not outcomes or any(o[0] in ("received", "selected") for o in outcomes.values())
    return {} if pending else outcomes


class Running:
    """Handles on a started `vigil up`: its database, the paper exchange, the CLI."""

    def __init__(self, env: dict[str, str], proc: subprocess.Popen[str]) -> None:
        self.env = env
        self.proc = proc
        port = env["VIGIL_EMBEDDED_PG_PORT"]
        self.db: Engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/vigil")
        self.exchange = env["VIGIL_EXCHANGE_URL"]
        self.signals = f"http://127.0.0.1:{env['VIGIL_SIGNAL_SIM_PORT']}"
        self.venue = env["VIGIL_PAPER_DIALECT"]

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(text(query), params).all())

    def vigil(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shell.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def post(self, base: str, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(  # noqa: S310 - loopback
            base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.exchange + path, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def emit(self, tag: str, symbols: list[str]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        frames = [
            {
                "id": f"{tag}-{symbol}",
                "symbol": symbol,
                "exchange": self.venue,
                "action": "BUY",
                "score_week": 90 - i,
                "score_month": 60,
                "timestamp": now,
            }
            for i, symbol in enumerate(symbols)
        ]
        self.post(self.signals, "/_sim/emit", {"signals": frames, "batch": True})

    def active(self) -> set[str]:
        rows = self.sql("SELECT symbol FROM positions WHERE status = 'active'")
        return {r[0] for r in rows}

    def signal_outcomes(self, tag: str) -> dict[str, tuple[str, str]]:
        rows = self.sql(
            "SELECT symbol, status, coalesce(outcome_reason, '') FROM signals "
            "WHERE signal_id LIKE :tag",
            tag=f"{tag}-%",
        )
        return {r[0]: (r[1], r[2].split(":")[0]) for r in rows}

    def exchange_positions(self) -> list[Any]:
        state = self.get("/_sim/state")
        return list(state["positions"])

    def exchange_orders(self) -> list[Any]:
        state = self.get("/_sim/state")
        return list(state["open_orders"]) + list(state.get("open_algo_orders", []))

    def stop_triggers(self, symbol: str) -> list[str]:
        return sorted(
            str(o.get("triggerPrice"))
            for o in self.exchange_orders()
            if o["symbol"] == symbol and o.get("triggerPrice") not in (None, "", "0")
        )


@pytest.fixture(params=["binance", "bybit"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(FAST)
    env.update(
        VIGIL_PAPER_DIALECT=request.param,
        VIGIL_HOME=str(tmp_path / "home"),
        VIGIL_EMBEDDED_PG_PORT=str(free_port()),
        VIGIL_EMBEDDED_REDIS_PORT=str(free_port()),
        VIGIL_FLOWER_PORT=str(free_port()),
        VIGIL_API_PORT=str(free_port()),
        VIGIL_SIGNAL_SIM_PORT=str(free_port()),
        VIGIL_EXCHANGE_URL=f"http://127.0.0.1:{free_port()}",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shell.cli",
            "up",
            "--concurrency",
            "2",
            "--no-flower",
            "--with-signal-sim",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    system = Running(env, proc)
    try:
        wait_for_line(proc, "openings: open", timeout=240)
        yield system
    finally:
        system.db.dispose()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        home = Path(env["VIGIL_HOME"]).resolve()
        for leftover in processes_of(home, ports_of(env)):
            leftover.kill()


def test_halt_revoked_key_and_close_all_on_the_running_system(running: Running) -> None:
    r = running
    r.emit("w1", ["BTCUSDT", "ETHUSDT"])
    wait_until(lambda: r.active() == {"BTCUSDT", "ETHUSDT"}, "the first wave's two positions")

    # -- vigil halt: the next wave opens nothing, trailing and protection go on ------------
    halted = r.vigil("halt", "--reason", "stack drill")
    assert halted.returncode == 0, halted.stderr
    halted_at = time.monotonic()
    wait_for_line(r.proc, "openings: HALTED", timeout=30)
    r.emit("w2", ["SOLUSDT", "BNBUSDT"])
    outcomes = wait_until(lambda: settled(r.signal_outcomes("w2")), "the halted wave's outcomes")
    filtered_after = time.monotonic() - halted_at
    assert outcomes == {"SOLUSDT": ("filtered", "halted"), "BNBUSDT": ("filtered", "halted")}
    assert r.active() == {"BTCUSDT", "ETHUSDT"}

    before = r.stop_triggers("BTCUSDT")
    price = r.get("/_sim/prices")["prices"]["BTCUSDT"]
    r.post(r.exchange, "/_sim/price", {"symbol": "BTCUSDT", "price": str(float(price) * 1.03)})
    wait_until(
        lambda: r.stop_triggers("BTCUSDT") not in ([], before), "a trailing move while halted"
    )
    checks = r.sql(
        "SELECT count(*) FROM events WHERE type = 'protection_check_completed' "
        "AND created_at > (SELECT halted_at FROM halts WHERE source = 'operator')"
    )[0][0]
    wait_until(
        lambda: (
            r.sql(
                "SELECT count(*) FROM events WHERE type = 'protection_check_completed' "
                "AND created_at > (SELECT halted_at FROM halts WHERE source = 'operator')"
            )[0][0]
            > checks
        ),
        "a protection cycle while halted",
    )
    resumed = r.vigil("resume")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout

    # -- a key revoked under the running engine halts openings and pages -------------------
    r.post(r.exchange, "/_sim/keys", {"api_key": "rotated", "api_secret": "rotated"})
    revoked_at = time.monotonic()
    wait_until(
        lambda: r.sql("SELECT 1 FROM halts WHERE source = 'auth' AND resumed_at IS NULL"),
        "the automatic halt",
    )
    halted_after = time.monotonic() - revoked_at
    [(severity, alert_status)] = r.sql(
        "SELECT e.severity, a.status FROM alerts a JOIN events e ON e.id = a.event_id "
        "WHERE a.kind = 'halted' AND e.data->>'source' = 'auth'"
    )
    assert severity == "critical" and alert_status in ("pending", "sent", "suppressed", "failed")
    print(
        f"\n[{r.venue}] halt -> wave filtered: {filtered_after:.1f}s; "
        f"revoked key -> halted + alert: {halted_after:.1f}s "
        f"(protection every {FAST['VIGIL_PROTECTION_INTERVAL']}s, "
        f"reconciliation every {FAST['VIGIL_RECONCILIATION_INTERVAL']}s)"
    )

    # -- the key is replaced; close everything ---------------------------------------------
    r.post(r.exchange, "/_sim/keys", {"api_key": "paper", "api_secret": "paper"})
    assert r.vigil("resume").returncode == 0
    dry = r.vigil("close", "--all", "--dry-run")
    assert dry.returncode == 0 and "2 position(s)" in dry.stdout, dry.stdout + dry.stderr
    closed = r.vigil("close", "--all", "--yes")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert r.exchange_positions() == []
    assert r.exchange_orders() == []
    assert r.active() == set()
    reasons = r.sql("SELECT DISTINCT close_reason FROM positions WHERE status = 'closed'")
    assert reasons == [("manual",)]
    diagnose = r.vigil("diagnose")
    assert diagnose.returncode == 0, diagnose.stdout + diagnose.stderr
