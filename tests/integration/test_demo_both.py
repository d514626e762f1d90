"""`vigil demo --exchange both`: one deployment trading Binance and Bybit at once (two paper
exchanges, one signal stream), the scenario played on each venue, each venue audited."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_on_both_venues_runs_every_scenario_on_each_and_each_audit_is_clean(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "demo", "--duration", "60", "--exchange", "both"],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    for venue in ("binance", "bybit"):
        assert f"{venue}: diagnose: every invariant holds" in out, venue
        assert f"paper, {venue} dialect" in out, venue
        for scenario in (
            "flash crash",
            "closed by hand",
            "orphan stop",
            "opened by hand",
            "stop cancelled by hand",
        ):
            assert re.search(rf"{venue}: .*{scenario}", out), (venue, scenario)
    assert "Traceback" not in out
    assert not list(tmp_path.glob("demo/postgres/data/postmaster.pid"))  # nothing left running
