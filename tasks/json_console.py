"""Celery's few direct console lines (the worker's "Warm shutdown" notices) as JSON lines.

The worker writes them from signal handlers straight to the file descriptor (``safe_say``),
past logging, so the JSON formatter never sees them. In JSON mode (``VIGIL_LOG_JSON=true``)
they are written as one JSON object per line instead, the same way (one ``os.write``, no
lock: safe inside a signal handler), so every line of a worker's output parses.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from core.config import Settings
from core.logging import CONTEXT_FIELDS


def json_say(msg: str, f: TextIO = sys.__stderr__) -> None:  # type: ignore[assignment]
    line = {
        "ts": datetime.now(UTC).isoformat(),
        "level": "WARNING",
        "logger": "celery.apps.worker",
        "msg": msg.strip(),
        "process": os.getpid(),
        "component": "worker",
        **dict.fromkeys(CONTEXT_FIELDS),  # outside any position or task
    }
    try:
        os.write(f.fileno(), (json.dumps(line) + "\n").encode())
    except (OSError, ValueError, AttributeError):
        pass  # a console notice must never break a shutdown


def install_json_console(settings: Settings, worker_module: Any = None) -> None:
    """Route the worker's direct console lines through ``json_say`` when logs are JSON."""
    if not settings.log_json:
        return
    if worker_module is None:
        from celery.apps import worker as celery_worker

        worker_module = celery_worker
    worker_module.safe_say = json_say
