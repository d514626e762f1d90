"""Orphan-state cleanup (queue ``maintenance``): at worker start and on beat."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from core import task_names as names
from core.services.orphans import clean_orphans
from tasks.base import vigil_task
from tasks.venues import for_each_venue

TASK = names.ORPHAN_CLEANUP


@vigil_task(names.ORPHAN_CLEANUP, max_retries=0)
def orphan_cleanup(dry_run: bool = False) -> dict[str, Any]:
    """Remove trailing/aged rows of ended positions and bands of symbols without one.

    ``dry_run=True`` only reports (``vigil task`` / Flower can send it with that kwarg).
    """
    return for_each_venue(lambda deps: clean_orphans(deps, dry_run=dry_run).as_dict())


@worker_ready.connect
def _clean_orphans_on_start(sender: Any = None, **_: Any) -> None:
    """At worker start, clear what a crash or an older version may have left behind."""
    if sender is not None:
        sender.app.send_task(TASK)
