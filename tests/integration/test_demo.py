"""`vigil demo`, the README's first command, runs the whole system and passes its own audit."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_every_scenario_and_ends_with_every_invariant_holding(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "demo", "--duration", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "diagnose: every invariant holds" in out
    assert "/console" in out  # where to watch it
    for scenario in (
        "flash crash",
        "closed by hand",
        "orphan stop",
        "opened by hand",
        "stop cancelled by hand",
    ):
        assert scenario in out, scenario
    assert "Traceback" not in out
    assert not list(tmp_path.glob("demo/postgres/data/postmaster.pid"))  # nothing left running
