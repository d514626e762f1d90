"""`vigil demo --exchange both`: one deployment trading Binance and Bybit at once (two paper
exchanges, one signal stream), the scenario played on each venue, each venue audited.

The run is the session's ``two_venue_demo`` (tests/fixtures/demo.py), which logs JSON so that
test_demo_json_logs.py judges its logs (the console report judged here is the same either
way), and whose Bybit part test_demo_bybit.py judges.
"""

import re

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_on_both_venues_runs_every_scenario_on_each_and_each_audit_is_clean(
    two_venue_demo,
):
    out = two_venue_demo.out
    assert two_venue_demo.returncode == 0, out[-5000:]
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
    assert not two_venue_demo.left_running  # nothing left running
