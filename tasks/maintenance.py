"""Maintenance tasks on beat: heartbeat and ping (liveness), recovery of interrupted
openings, event retention. The guardians (protection, reconciliation, zombies) are in
``tasks/guardians.py``, aged positions in ``tasks/aged.py``, alerts in ``tasks/alerts.py``."""

from __future__ import annotations

import socket
from typing import Any

from core import task_names as names
from core.clock import SYSTEM_CLOCK
from core.db.session import unit_of_work
from core.services import heartbeat
from core.services.deps import Deps, get_deps
from core.services.recovery import recover_interrupted
from core.services.retention import purge_events
from tasks.base import vigil_task
from tasks.venues import for_each_venue


@vigil_task(names.HEARTBEAT, max_retries=0)
def heartbeat_task(component: str = "beat") -> str:
    """Sent by beat on a cadence: its arrival proves beat, the broker and a worker are alive."""
    now = SYSTEM_CLOCK.now()
    with unit_of_work() as session:
        heartbeat.beat(session, component, now)
        heartbeat.beat(session, f"worker:{socket.gethostname()}", now)
    return now.isoformat()


@vigil_task(names.PING, max_retries=0)
def ping() -> dict[str, Any]:
    """A no-op round trip: used by `vigil up` to prove a worker answers, and by benchmarks."""
    return {"pong": True, "host": socket.gethostname()}


@vigil_task(names.RECOVER_INTERRUPTED_OPENINGS, max_retries=0)
def recover_interrupted_openings(min_age_seconds: float | None = None) -> dict[str, Any]:
    """Resolve positions left in pending_entry / entry_placed / pending_sl against the exchange."""

    def one(deps: Deps) -> dict[str, Any]:
        report = recover_interrupted(deps, min_age_seconds)
        return {
            "examined": report.examined,
            "outcomes": report.outcomes,
            "deferred": report.deferred,
        }

    return for_each_venue(one)


@vigil_task(names.EVENTS_RETENTION, max_retries=0)
def events_retention() -> dict[str, int]:
    """Purge events past their retention (critical ones are kept longer), in batches."""
    settings = get_deps().settings
    result = purge_events(
        SYSTEM_CLOCK.now(),
        keep_days=settings.event_retention_days,
        keep_critical_days=settings.critical_event_retention_days,
    )
    return {"deleted": result.deleted, "batches": result.batches}
