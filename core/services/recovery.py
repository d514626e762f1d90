"""Recovery of interrupted openings: nothing stays in an intermediate state.

Runs at worker start and on a beat cadence. Each position left in ``pending_entry``,
``entry_placed``, ``pending_sl`` (or in a rollback's ``closing``) for longer than a grace
period is driven on by the same code as a fresh opening, which first asks the exchange what
already happened (orders by client id, the position itself), then finishes the stop, rolls
back, or marks it failed.

Why two ages: from ``entry_placed`` on, an entry may be filled on the exchange with no stop
yet, so waiting out the whole grace period would leave real money unprotected for minutes
after a worker is killed mid-opening. Every step of an opening runs under the symbol lock,
so such a position whose lock is free (its worker died and the lock's TTL ran out, or its
task is waiting for a retry) is taken over after only ``intermediate_state_takeover_seconds``.
``pending_entry`` keeps the full grace period: it may simply be queued behind a busy wave,
and its entry is looked up by client id before anything is sent anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select

from core.db.models import Position
from core.domain.positions import INTERMEDIATE, PositionStatus
from core.events import EventType, Severity
from core.exchange.errors import ExchangeFailure
from core.locks import LockNotAcquired, lock_key
from core.services.deps import Deps
from core.services.opening import open_position


@dataclass
class RecoveryReport:
    examined: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


# States in which an entry may already be filled on the exchange without a stop.
_EXPOSED = [PositionStatus.ENTRY_PLACED.value, PositionStatus.PENDING_SL.value]


def interrupted_ids(deps: Deps, min_age_seconds: float) -> list[int]:
    """Intermediate positions untouched for ``min_age_seconds``, plus exposed ones nobody drives.

    An exposed position (see ``_EXPOSED``, or a rollback's ``closing``) is due after the
    shorter takeover age when its symbol lock is free; one whose lock is held is being
    worked on and is left to its holder.
    """
    now = deps.clock.now()
    takeover = min(min_age_seconds, deps.settings.intermediate_state_takeover_seconds)
    rollback = (Position.status == PositionStatus.CLOSING) & (Position.close_reason == "rollback")
    with deps.unit_of_work() as session:
        rows = session.execute(
            select(Position.id, Position.symbol, Position.updated_at)
            .where(
                Position.exchange == deps.exchange_name,
                or_(Position.status.in_([s.value for s in INTERMEDIATE]), rollback),
                or_(
                    Position.updated_at <= now - timedelta(seconds=min_age_seconds),
                    or_(Position.status.in_(_EXPOSED), rollback)
                    & (Position.updated_at <= now - timedelta(seconds=takeover)),
                ),
            )
            .order_by(Position.id)
        ).all()
    grace_cutoff = now - timedelta(seconds=min_age_seconds)
    return [
        position_id
        for position_id, symbol, updated_at in rows
        if updated_at <= grace_cutoff or not deps.redis.exists(lock_key(deps.exchange_name, symbol))
    ]


def recover_interrupted(deps: Deps, min_age_seconds: float | None = None) -> RecoveryReport:
    age = (
        deps.settings.intermediate_state_grace_seconds
        if min_age_seconds is None
        else (min_age_seconds)
    )
    ids = interrupted_ids(deps, age)
    report = RecoveryReport(examined=len(ids))
    if not ids:
        return report
    deps.record_alone(
        EventType.POSITION_RECOVERY_STARTED,
        exchange=deps.exchange_name,
        position_ids=ids,
    )
    for position_id in ids:
        try:
            outcome = open_position(deps, position_id, count_attempt=False).value
        except (ExchangeFailure, LockNotAcquired) as exc:
            report.deferred.append(position_id)
            outcome = f"deferred: {type(exc).__name__}"
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        deps.record_alone(
            EventType.POSITION_RECOVERED,
            severity=Severity.INFO if not outcome.startswith("deferred") else Severity.WARNING,
            exchange=deps.exchange_name,
            position_id=position_id,
            outcome=outcome,
        )
    deps.record_alone(
        EventType.POSITION_RECOVERY_COMPLETED,
        exchange=deps.exchange_name,
        examined=report.examined,
        outcomes=report.outcomes,
        deferred=report.deferred,
    )
    return report
