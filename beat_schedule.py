"""Every periodic cadence, in one place, read from settings.

Each entry expires at about 1.5x its interval: a beat message that waited longer than that
in a backed-up queue is dropped rather than run late on top of its successor.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings


def _every(task: str, seconds: float, **kwargs: Any) -> dict[str, Any]:
    return {
        "task": task,
        "schedule": seconds,
        "kwargs": kwargs,
        "options": {"expires": max(1.0, seconds * 1.5)},
    }


def build_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        # proves beat -> broker -> worker -> database is alive; read by /health
        "heartbeat": _every(
            "vigil.maintenance.heartbeat", settings.heartbeat_interval, component="beat"
        ),
        # openings a crash left in pending_entry / entry_placed / pending_sl
        "recover-interrupted-openings": _every(
            "vigil.maintenance.recover_interrupted_openings", settings.recovery_interval
        ),
    }
