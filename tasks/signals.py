"""Signal waves (queue ``signals``), and beat's fallback dispatcher of due waves.

A wave's openings fan out: ``process_wave`` claims and selects the wave and starts up to N
openings; each opening is the existing ``vigil.orders.open_position`` task, chained to
``vigil.signals.advance_wave``, which starts the next candidate if that opening failed and
completes the wave when nothing is left in flight (core/services/waves.py).
"""

from __future__ import annotations

from typing import Any

from celery import chain

from core import task_names as names
from core.services import waves
from core.services.deps import Deps, deps_for_wave
from core.transient import STORES_DOWN
from tasks.app import app
from tasks.base import Retryable, vigil_task
from tasks.venues import for_each_venue

OPEN_POSITION_TASK = names.OPEN_POSITION
RETRY_ON = (Retryable, *STORES_DOWN)


def launcher(wave_id: int) -> waves.Launch:
    """Start one wave opening: open the position, then move the wave on."""

    def launch(position_id: int) -> None:
        chain(
            app.signature(OPEN_POSITION_TASK, args=[position_id], immutable=True),
            advance_wave.si(wave_id),
        ).apply_async()

    return launch


@vigil_task(names.PROCESS_WAVE, retry_on=RETRY_ON, max_retries=5)
def process_wave(wave_id: int) -> dict[str, Any]:
    """Claim, select and start one wave; a repeated delivery changes nothing."""
    return waves.process_wave(deps_for_wave(wave_id), wave_id, launcher(wave_id)).as_dict()


@vigil_task(names.ADVANCE_WAVE, retry_on=RETRY_ON, max_retries=5)
def advance_wave(wave_id: int) -> dict[str, Any]:
    """After an opening finished: start the next candidate if needed, or complete the wave."""
    return waves.advance_wave(deps_for_wave(wave_id), wave_id, launcher(wave_id)).as_dict()


@vigil_task(names.DISPATCH_DUE_WAVES, max_retries=0)
def dispatch_due_waves() -> dict[str, Any]:
    """Fallback of the ingest's dispatcher: due and stalled waves, overdue ones expired."""

    def one(deps: Deps) -> dict[str, Any]:
        report = waves.dispatch_due_waves(
            deps, lambda wave_id: process_wave.apply_async(args=[wave_id])
        )
        return {
            "expired": report.expired,
            "dispatched": report.dispatched,
            "stalled": report.stalled,
        }

    return for_each_venue(one)
