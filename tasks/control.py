"""Operator control as tasks: halt, resume, close by hand (``vigil task halt reason=...``).

Thin: each calls the service the CLI and the API call (core/services/halts.py,
core/services/manual_close.py). Safe to run twice: a halt in force is not repeated, a
resume with nothing in force does nothing, a closed position is not closed again.
"""

from __future__ import annotations

from typing import Any

from core.clock import SYSTEM_CLOCK
from core.services import halts, manual_close
from core.services.deps import deps_for_position
from tasks.base import vigil_task
from tasks.venues import for_each_venue

BY = "task"


@vigil_task("maintenance.halt", max_retries=0)
def halt(reason: str = "halted by task") -> dict[str, Any]:
    """Stop new openings (every venue); protection, trailing and closes go on."""
    result = halts.halt(reason, BY, now=SYSTEM_CLOCK.now())
    return {"created": result.created, "halt": result.halt.as_dict()}


@vigil_task("maintenance.resume", max_retries=0)
def resume() -> dict[str, Any]:
    """Lift every halt in force."""
    return {"resumed": [h.as_dict() for h in halts.resume(BY, now=SYSTEM_CLOCK.now())]}


@vigil_task("orders.close_position_manual", max_retries=0)
def close_position_manual(position_id: int) -> dict[str, Any]:
    """Close one position at market with reason ``manual`` (the one close path)."""
    return manual_close.close_one(deps_for_position(int(position_id)), int(position_id)).as_dict()


@vigil_task("orders.close_all", max_retries=0)
def close_all() -> dict[str, Any]:
    """Halt, then close every position of each venue at market (reason ``manual``)."""
    return for_each_venue(lambda deps: manual_close.close_all(deps, BY).as_dict())
