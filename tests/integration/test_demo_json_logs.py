"""`vigil demo` (its shortest run) with VIGIL_LOG_JSON=true: every line every process logged
parses as a JSON object, tasks' lines name the task."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

PROCESSES = {"worker1", "worker2", "beat", "ingest", "api", "flower", "sim", "signal-sim"}


def test_every_line_of_every_process_is_json_through_a_whole_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_HOME=str(tmp_path), VIGIL_LOG_JSON="true")
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "demo", "--duration", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    logs = {path.stem: path for path in (tmp_path / "demo" / "logs").glob("*.log")}
    assert PROCESSES <= set(logs), sorted(logs)
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
