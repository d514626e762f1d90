"""Aged positions on beat (queue ``maintenance``); the price path closes them between beats."""

from __future__ import annotations

from typing import Any

from core import task_names as names
from core.services.aged import run_aged_cycle
from tasks.base import vigil_task
from tasks.venues import for_each_venue


@vigil_task(names.AGED_POSITIONS, max_retries=0)
def aged_positions() -> dict[str, Any]:
    """Detect aged positions, advance their phases, publish close bands, close what is due.

    Not retried: the next beat (``aged_interval``) is the retry, and failed closes back off
    in the database.
    """
    return for_each_venue(lambda deps: run_aged_cycle(deps).as_dict())
