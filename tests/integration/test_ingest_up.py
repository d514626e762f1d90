"""`vigil up --with-signal-sim`: the signal simulator and the ingest start, the ingest reads
the simulator with the generated token, stores its signals, and Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from shell.runtime.embedded import free_port
from tests.integration.test_vigil_up import ports_of, processes_of, wait_for_line

pytestmark = pytest.mark.integration


@pytest.fixture
def up_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_HOME=str(tmp_path / "home"),
        VIGIL_EMBEDDED_PG_PORT=str(free_port()),
        VIGIL_EMBEDDED_REDIS_PORT=str(free_port()),
        VIGIL_FLOWER_PORT=str(free_port()),
        VIGIL_API_PORT=str(free_port()),
        VIGIL_SIGNAL_SIM_PORT=str(free_port()),
        VIGIL_EXCHANGE_URL=f"http://127.0.0.1:{free_port()}",
        VIGIL_HEARTBEAT_INTERVAL="1",
    )
    yield env
    for proc in processes_of(Path(env["VIGIL_HOME"]).resolve(), ports_of(env)):
        proc.kill()


def test_up_with_signal_sim_runs_an_ingest_that_stores_the_simulated_signals(up_env):
    home = Path(up_env["VIGIL_HOME"]).resolve()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shell.cli",
            "up",
            "--concurrency",
            "1",
            "--with-signal-sim",
            "--no-flower",
            "--no-api",
        ],
        env=up_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = wait_for_line(proc, "Ctrl-C stops everything", timeout=180)
        sim_port = up_env["VIGIL_SIGNAL_SIM_PORT"]
        assert f"ws://127.0.0.1:{sim_port}/ws" in out
        assert "signal-sim" in out and "ingest" in out

        url = f"postgresql+psycopg2://postgres@127.0.0.1:{up_env['VIGIL_EMBEDDED_PG_PORT']}/vigil"
        engine = create_engine(url)

        def scalar(sql: str):
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar()

        deadline = time.monotonic() + 60
        while not scalar(
            "SELECT (info->>'signal_connected')::bool FROM heartbeats "
            "WHERE component = 'ingest:binance'"
        ):
            assert time.monotonic() < deadline, "the ingest never reported a connected socket"
            time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{sim_port}/_sim/emit",
            data=json.dumps({"wave": True}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["clients"] == 1
        while scalar("SELECT count(*) FROM signals") < 10:  # the simulator's wave size
            assert time.monotonic() < deadline, "the simulated wave was not stored"
            time.sleep(0.2)
        assert scalar("SELECT count(*) FROM events WHERE type = 'websocket_auth_refused'") == 0
        engine.dispose()

        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        rest = proc.stdout.read() or ""  # what it printed while stopping, for a failure
        assert code == 0, out + rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert processes_of(home, ports_of(up_env)) == []
