"""Storage down: every command says so in one line and exits 2 (no traceback, no long wait)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shell.runtime.embedded import free_port

pytestmark = pytest.mark.integration

COMMANDS = (
    ["task", "ping", "--wait"],
    ["db", "current"],
    ["db", "upgrade"],
    ["diagnose"],
    ["events"],
    ["healthcheck", "beat"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_storage_down_is_one_line_and_exit_2(command: list[str], tmp_path) -> None:
    nobody = free_port()  # nothing listens there
    env = {
        **os.environ,
        "VIGIL_HOME": str(tmp_path),
        "VIGIL_DATABASE_URL": f"postgresql://vigil@127.0.0.1:{nobody}/vigil",
        "VIGIL_REDIS_URL": f"redis://127.0.0.1:{nobody}/0",
        "COLUMNS": "60",  # a narrow terminal must not wrap the line either
    }
    done = subprocess.run(
        [sys.executable, "-m", "shell.cli", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and "unreachable" in lines[0]


def test_exchange_down_is_one_error_line_and_exit_2(tmp_path) -> None:
    nobody = free_port()
    env = {
        **os.environ,
        "VIGIL_HOME": str(tmp_path),
        "VIGIL_EXCHANGE": "paper",
        "VIGIL_EXCHANGE_URL": f"http://127.0.0.1:{nobody}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "shell.cli", "reproduce-duplicates", "--duration", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "exchange unreachable" in errors[0], done.stderr[-3000:]
