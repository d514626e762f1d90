"""The project's Celery worker (tasks.app, as `vigil worker` runs it) with one task of its own.

Used by test_broker_loss.py: ``python -m tests.integration.broker_loss_worker QUEUE NAME``.
The task records that it started and that it ran in files named by ``BROKER_LOSS_RECORDS``
(appending the token: running twice is harmless), and a token starting with ``held`` waits for
the file ``<records>.release`` (every held task) or ``<records>.release-<token>`` (that one)
first, so the test decides when the worker holds an unacknowledged message (a running
``acks_late`` task) and when it lets it go. A token starting with ``hang`` never ends on its
own (it ignores the soft time limit): only the hard time limit stops it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from tasks.app import app
from tests.integration.redis_census import start_census_thread

RECORDS = Path(os.environ["BROKER_LOSS_RECORDS"])
TASK_NAME = "tests.broker_loss.record"
HOLD_LIMIT_SECONDS = 120
HANG_SECONDS = 3600


def _append(path: Path, token: str) -> None:
    with path.open("a") as out:
        out.write(token + "\n")


def _hang() -> None:
    """A task stuck for good (a call that never returns): only the hard time limit ends it."""
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue  # stuck in something the soft limit's exception does not reach


@app.task(name=TASK_NAME, acks_late=True)
def record(token: str) -> str:
    _append(RECORDS.with_suffix(".started"), token)
    if token.startswith("hang"):
        _hang()
    if token.startswith("held"):
        every = RECORDS.with_suffix(".release")
        this_one = RECORDS.with_suffix(f".release-{token}")
        deadline = time.monotonic() + HOLD_LIMIT_SECONDS
        while not (every.exists() or this_one.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
    _append(RECORDS, token)
    return token


if __name__ == "__main__":
    queue, name = sys.argv[1], sys.argv[2]
    start_census_thread(RECORDS.with_suffix(".census"))
    app.worker_main(
        ["worker", "-Q", queue, "-c", "2", "-n", f"{name}@%h", "-P", "prefork"]
        + ["--loglevel", "INFO", "-E"]
    )
