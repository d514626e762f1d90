"""Recovery of interrupted openings: nothing stays in an intermediate state.

Runs at worker start and on a beat cadence. Each position left in ``pending_entry``,
``entry_placed``, ``pending_sl`` (or in a rollback's ``closing``) for longer than a grace
period is driven on by the same code as a fresh opening, which first asks the exchange what
already happened (orders by client id, the position itself), then finishes the stop, rolls
back, or marks it failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select

from core.db.models import Position
from core.db.session import unit_of_work
from core.domain.positions import INTERMEDIATE, PositionStatus
from core.events import EventType, Severity, record
from core.exchange.errors import ExchangeFailure
from core.locks import LockNotAcquired
from core.services.deps import Deps
from core.services.opening import open_position


@dataclass
class RecoveryReport:
    examined: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


def interrupted_ids(deps: Deps, min_age_seconds: float) -> list[int]:
    cutoff = deps.clock.now() - timedelta(seconds=min_age_seconds)
    with unit_of_work() as session:
        return list(
            session.scalars(
                select(Position.id)
                .where(
                    Position.exchange == deps.exchange_name,
                    or_(
                        Position.status.in_([s.value for s in INTERMEDIATE]),
                        (Position.status == PositionStatus.CLOSING)
                        & (Position.close_reason == "rollback"),
                    ),
                    Position.updated_at <= cutoff,
                )
                .order_by(Position.id)
            )
        )


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
    with unit_of_work() as session:
        record(
            session,
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
        with unit_of_work() as session:
            record(
                session,
                EventType.POSITION_RECOVERED,
                severity=Severity.INFO if not outcome.startswith("deferred") else Severity.WARNING,
                exchange=deps.exchange_name,
                position_id=position_id,
                outcome=outcome,
            )
    with unit_of_work() as session:
        record(
            session,
            EventType.POSITION_RECOVERY_COMPLETED,
            exchange=deps.exchange_name,
            examined=report.examined,
            outcomes=report.outcomes,
            deferred=report.deferred,
        )
    return report
