"""Every periodic cadence, in one place, read from settings.

Each entry expires at about 1.5x its interval: a beat message that waited longer than that
in a backed-up queue is dropped rather than run late on top of its successor.
"""

from __future__ import annotations

from typing import Any

from core import task_names as names
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
        "heartbeat": _every(names.HEARTBEAT, settings.heartbeat_interval, component="beat"),
        # the event log stays bounded: old events purged in batches
        "events-retention": _every(names.EVENTS_RETENTION, settings.event_retention_interval),
        # pending alerts to the webhook / Telegram; failed deliveries retried with backoff
        "deliver-alerts": _every(names.DELIVER_ALERTS, settings.alert_delivery_interval),
        # aged positions: detect, store each phase change, publish close bands, close at cap
        "aged-positions": _every(names.AGED_POSITIONS, settings.aged_interval),
        # trailing/aged rows of ended positions and bands of untracked symbols (also at start)
        "orphan-cleanup": _every(names.ORPHAN_CLEANUP, settings.orphan_cleanup_interval),
        # trailing stops no tick woke lately: re-decide with the latest price (due deferred
        # moves, time-based activation), refresh the heartbeat protection watches
        "trailing-sweep": _every(names.TRAILING_SWEEP, settings.trailing_sweep_interval),
        # waves the ingest did not dispatch (it is down) or whose processing stalled; waves
        # long past their deadline are expired, never traded late
        "dispatch-due-waves": _every(names.DISPATCH_DUE_WAVES, settings.wave_dispatch_interval),
        # openings a crash left in pending_entry / entry_placed / pending_sl
        "recover-interrupted-openings": _every(
            names.RECOVER_INTERRUPTED_OPENINGS, settings.recovery_interval
        ),
        # every active position has one full live stop; restores cancelled stops, takes over
        # from a trailing stop whose heartbeat went stale, alerts on long-unprotected positions
        "protection-check": _every(names.PROTECTION_CHECK, settings.protection_interval),
        # exchange is the truth: phantoms settled, missing positions adopted and protected,
        # quantities corrected, side mismatches flagged (also sent at worker start)
        "reconciliation": _every(names.RECONCILIATION, settings.reconciliation_interval),
        # open orders that serve no position (left-over stops, orphan reduce-only orders)
        "zombie-cleanup": _every(names.ZOMBIE_CLEANUP, settings.zombie_interval),
    }
