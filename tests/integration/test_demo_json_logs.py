"""`vigil demo` (its shortest run) with VIGIL_LOG_JSON=true: every line every process logged
parses as a JSON object, tasks' lines name the task.

The run is the session's ``two_venue_demo`` (tests/fixtures/demo.py), also judged by
test_demo_both.py and test_demo_bybit.py: its deployment runs every process a single-venue
demo runs (the default venue's paper exchange and ingest are ``sim`` and ``ingest`` there
too) plus the second venue's ``sim-bybit`` and ``ingest-bybit``, held to the same rule.
"""

import json

import pytest

pytestmark = pytest.mark.integration

PROCESSES = {"worker1", "worker2", "beat", "ingest", "api", "flower", "sim", "signal-sim"}
SECOND_VENUE = {"sim-bybit", "ingest-bybit"}


def test_every_line_of_every_process_is_json_through_a_whole_demo(two_venue_demo):
    assert two_venue_demo.returncode == 0, two_venue_demo.out[-4000:]

    logs = {path.stem: path for path in two_venue_demo.logs.glob("*.log")}
    assert PROCESSES | SECOND_VENUE <= set(logs), sorted(logs)
    task_lines = 0
    for name, path in sorted(logs.items()):
        lines = path.read_text().splitlines()
        assert lines, name
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{name}.log line {number} is not JSON: {line[:200]!r}")
            assert isinstance(record, dict) and {"ts", "level", "msg"} <= set(record), line
            assert "correlation_id" in record and "task_id" in record
            task_lines += bool(record.get("task_id") and record.get("task_name"))
    assert task_lines > 0  # lines logged inside tasks carry the task's id and name
