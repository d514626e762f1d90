"""The end of a chaos run: faults cleared, guardians given their intervals, then the audit.

The audit is the invariant check of ``vigil diagnose`` repeated until it is clean or the
guardians' time is up, plus what only a chaos run can count: signals left without an
outcome, redeliveries, and events that carry one of the run's distinctive secrets.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from sqlalchemy import String, cast, func, or_, select

from core.config import Settings
from core.db.models import Event, Signal
from core.db.session import unit_of_work
from core.services.deps import Deps
from shell.harness.chaos_plan import CHAOS_SECRETS
from shell.harness.demo import DemoSystem

TERMINAL_SIGNAL_STATUSES = {"filtered", "opened", "failed", "expired"}


def settle_seconds(s: Settings) -> float:
    """How long the audit may wait for the guardians to repair what the faults left."""
    return float(
        max(
            3
            * max(
                s.protection_interval,
                s.reconciliation_interval,
                s.zombie_interval,
                s.recovery_interval,
                s.intermediate_state_grace_seconds,
            ),
            # a wave claimed as PostgreSQL died (a 20 s outage) is resumed only once it has
            # made no progress for the stall time: the audit must outlast that
            s.wave_stall_seconds + 3 * s.wave_dispatch_interval,
        )
    )


def signals_without_outcome() -> int:
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Signal)
                .where(Signal.status.not_in(TERMINAL_SIGNAL_STATUSES))
            )
            or 0
        )


def redeliveries() -> dict[str, int]:
    kinds = ("task_gave_up", "order_lookup_before_retry", "position_recovered")
    with unit_of_work() as s:
        rows = s.execute(
            select(Event.type, func.count()).where(Event.type.in_(kinds)).group_by(Event.type)
        ).all()
    return {k: int(n) for k, n in rows}


def secrets_in_events() -> int:
    """Events whose data carries one of the run's distinctive secrets (must be 0)."""
    with unit_of_work() as s:
        text_of = cast(Event.data, String)
        hits = or_(*(text_of.contains(secret) for secret in CHAOS_SECRETS.values()))
        return int(s.scalar(select(func.count()).select_from(Event).where(hits)) or 0)


def clear_faults(system: DemoSystem) -> None:
    req = urllib.request.Request(system.exchange_url + "/_sim/fault", method="DELETE")  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        json.loads(resp.read() or b"null")


def audit(
    check: Callable[[Deps], Any], deps: Deps, settle: float, say: Callable[[str], None]
) -> Any:
    """Audit until clean or ``settle`` seconds pass: guardians converge within their intervals."""
    deadline = time.monotonic() + settle
    while True:
        report = check(deps)
        if (report.clean and signals_without_outcome() == 0) or time.monotonic() >= deadline:
            return report
        say(f"audit: {len(report.violations)} violation(s) still open; waiting for guardians")
        time.sleep(1)  # the run's end waits on this: a guardian's repair is seen within 1 s
