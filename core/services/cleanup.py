"""``vigil cleanup``: act on what the invariant checker finds, dry-run unless asked to apply.

What it fixes, each through the service that owns the fix (nothing is re-implemented here):

- orphan trailing/aged rows -> ``orphans.clean_orphans`` (the hourly guardian's own pass);
- stale interrupted openings -> ``recovery.recover_interrupted`` (looks orders up by client
  id, then finishes the stop, rolls back or fails the opening);
- orphan orders -> cancelled through the adapter under the symbol's lock, after re-checking
  inside the lock that the order is still an orphan (its position still terminal or unknown,
  or still no exchange position on the symbol). Orders of a terminal position go through
  ``closing.cancel_leftovers``, the close path's own leftover cancel. Cleanup acts on
  exactly the orders the checker reported, so the report and the actions match line by
  line; the zombie guardian (``zombies.cleanup_zombies``, run by hand with
  ``vigil task zombie_cleanup``) judges more (wrong position index,
  would flip, stale entries) on its own cadence.

What it reports but leaves alone, with the command that handles it: duplicates, unprotected
positions, DB/exchange mismatches (reconciliation and protection decide those, under their
own rules), positions whose events are missing (history cannot be invented after the fact).

Every applied action writes a CLEANUP_ACTION event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.db.models import Position
from core.domain.positions import TERMINAL, PositionStatus
from core.events import EventType, record
from core.exchange.client_ids import of_position, parse_client_id
from core.exchange.errors import ExchangeFailure
from core.locks import LockNotAcquired
from core.services.closing import cancel_leftovers, lock_for, record_cancelled_leftovers
from core.services.deps import Deps
from core.services.executor import Executor
from core.services.invariants import InvariantReport, Violation, ViolationKind, check_invariants
from core.services.orphans import clean_orphans
from core.services.recovery import recover_interrupted

FIXABLE = {
    ViolationKind.ORPHAN_TRAILING: "remove the row (orphan-state cleanup)",
    ViolationKind.ORPHAN_AGED: "remove the row (orphan-state cleanup)",
    ViolationKind.STALE_OPENING: "hand to recovery",
    ViolationKind.ORPHAN_ORDER: "cancel the order",
}
LEFT_TO = {
    ViolationKind.DUPLICATE_POSITION: "resolve by hand: reconciliation refuses to guess",
    ViolationKind.UNPROTECTED_POSITION: "protection places a stop: vigil task protection_check",
    ViolationKind.SURPLUS_STOP: "protection cancels the extra stop: vigil task protection_check",
    ViolationKind.POSITION_MISMATCH: "reconciliation settles it: vigil task reconciliation",
    ViolationKind.MISSING_TRANSITION_EVENT: "a bug in a status path: report it",
}


@dataclass
class CleanupAction:
    violation: Violation
    plan: str
    outcome: str | None = None  # None in a dry run

    def as_dict(self) -> dict[str, Any]:
        return {"violation": self.violation.as_dict(), "plan": self.plan, "outcome": self.outcome}


@dataclass
class CleanupReport:
    applied: bool
    found: InvariantReport
    actions: list[CleanupAction] = field(default_factory=list)
    left: list[tuple[Violation, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "actions": [a.as_dict() for a in self.actions],
            "left": [{"violation": v.as_dict(), "handled_by": why} for v, why in self.left],
            "errors": list(self.found.errors),
        }


def run_cleanup(deps: Deps, *, apply: bool = False) -> CleanupReport:
    """Check, then (with ``apply``) fix what cleanup owns; returns what was (or would be) done."""
    found = check_invariants(deps)
    report = CleanupReport(apply, found)
    for violation in found.violations:
        if violation.kind in FIXABLE:
            report.actions.append(CleanupAction(violation, FIXABLE[violation.kind]))
        else:
            report.left.append((violation, LEFT_TO[violation.kind]))
    if apply and report.actions:
        _apply(deps, report.actions)
    return report


def _apply(deps: Deps, actions: list[CleanupAction]) -> None:
    kinds = {a.violation.kind for a in actions}
    if kinds & {ViolationKind.ORPHAN_TRAILING, ViolationKind.ORPHAN_AGED}:
        orphans = clean_orphans(deps)
        removed = {
            ViolationKind.ORPHAN_TRAILING: set(orphans.trailing),
            ViolationKind.ORPHAN_AGED: set(orphans.aged),
        }
        for action in actions:
            if action.violation.kind in removed:
                gone = action.violation.position_id in removed[action.violation.kind]
                action.outcome = "removed" if gone else "already gone"
    if ViolationKind.STALE_OPENING in kinds:
        recovery = recover_interrupted(deps, deps.settings.intermediate_state_grace_seconds)
        for action in actions:
            if action.violation.kind is ViolationKind.STALE_OPENING:
                deferred = action.violation.position_id in recovery.deferred
                action.outcome = "deferred by recovery" if deferred else "recovered"
    for action in actions:
        if action.violation.kind is ViolationKind.ORPHAN_ORDER:
            action.outcome = _cancel_orphan(deps, action.violation)
    with deps.unit_of_work() as session:
        for action in actions:
            v = action.violation
            record(
                session,
                EventType.CLEANUP_ACTION,
                exchange=v.exchange or deps.exchange_name,
                symbol=v.symbol,
                position_id=v.position_id,
                order_id=v.client_order_id,
                violation=v.kind,
                detail=v.detail,
                action=action.plan,
                outcome=action.outcome,
                exchange_order_id=v.order_id,
            )


def _cancel_orphan(deps: Deps, violation: Violation) -> str:
    assert violation.symbol is not None and violation.order_id is not None
    try:
        with lock_for(deps, deps.exchange_name, violation.symbol) as _held:
            return _cancel_locked(deps, violation)
    except LockNotAcquired:
        return "skipped: symbol busy"
    except ExchangeFailure as exc:
        return f"failed: {type(exc).__name__}: {exc}"


def _cancel_locked(deps: Deps, violation: Violation) -> str:
    """Inside the lock: re-check that the order is still an orphan, then cancel it."""
    symbol, order_id = violation.symbol, violation.order_id
    assert symbol is not None and order_id is not None
    owner = _owner(deps, violation.client_order_id)
    if owner is not None and PositionStatus(owner.status) not in TERMINAL:
        return "kept: its position is live again"
    if owner is not None:
        cancelled = cancel_leftovers(deps, owner)
        with deps.unit_of_work() as session:
            record_cancelled_leftovers(session, owner, cancelled)
        return f"cancelled {len(cancelled)} leftover order(s) of position {owner.id}"
    if violation.client_order_id is None or parse_client_id(violation.client_order_id) is None:
        # a foreign reduce-only/stop order: only an orphan while the symbol has no position
        if any(p.symbol == symbol for p in deps.exchange.positions()):
            return "kept: the symbol has a position now"
    gone = not Executor.of(deps).cancel(symbol, order_id, conditional=violation.conditional)
    return "already gone" if gone else "cancelled"


def _owner(deps: Deps, client_order_id: str | None) -> Position | None:
    parsed = parse_client_id(client_order_id)
    if parsed is None:
        return None
    with deps.unit_of_work() as session:
        position = session.get(Position, parsed.position_id)
        if position is None or not of_position(parsed, position.correlation_id):
            return None
        return position
