"""`vigil demo --exchange bybit`: the whole demo against the paper exchange's Bybit v5
dialect, with the same scenario and the same audit as on Binance (test_demo.py)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_on_bybit_runs_every_scenario_and_every_invariant_holds(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "demo", "--duration", "60", "--exchange", "bybit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "diagnose: every invariant holds" in out
    assert "paper, bybit dialect" in out
    for scenario in (
        "flash crash",
        "closed by hand",
        "orphan stop",
        "opened by hand",
        "stop cancelled by hand",
    ):
        assert scenario in out, scenario
    for event in ("stop_triggered", "zombie_order_cancelled", "stop_set_by_protection"):
        assert event in out, event  # the paths the scenario provokes ran on Bybit
    assert "Traceback" not in out
    assert not list(tmp_path.glob("demo/postgres/data/postmaster.pid"))  # nothing left running
