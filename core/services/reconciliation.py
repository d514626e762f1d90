"""Reconciliation: the database's positions against the exchange's, the exchange being right.

One cycle (beat, every ``reconciliation_interval``; at worker start; or by hand):

1. read the exchange's positions (one call), THEN the database's. The order matters: the
   engine writes a position's row before it sends the entry, so anything the exchange
   showed is already visible in the later DB read, and an opening in flight is never
   mistaken for a missing position (seeds/003: the old sync created duplicates that way);
2. diff them (``core.domain.reconciliation.reconcile``: intermediate states get a grace
   period, then go to recovery; recently closed symbols wait);
3. act on each difference, every change under the symbol's lock after reading the
   exchange again:

   - phantom (DB only): ``closing.settle_external_close(..., "phantom")`` records the real
     exit from the trades, removes trailing/aged state and cancels the position's orders;
   - missing (exchange only): a ``pending_sl`` row is created (the partial unique index
     refuses it if an opening got there first) and driven by the opening code, which
     places the stop and activates it;
   - quantity mismatch: the DB takes the exchange's quantity (fenced) and protection makes
     the stop cover it (make before break, same ownership rules);
   - side mismatch and duplicate rows: critical events, nothing changed automatically;
   - intermediate states past the grace: resumed through the opening (or closing) path.

After phantoms are settled, the zombie cleaner looks at their symbols at once: the close
path cancels the position's own orders, this catches anything else left there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from core.db.models import Position
from core.domain.orders import ExchangePosition, less_than_a_lot
from core.domain.positions import NON_TERMINAL, TERMINAL, PositionStatus
from core.domain.reconciliation import DbPosition, ReconAction, ReconKind, ReconParams, reconcile
from core.domain.sides import Side
from core.events import EventContext, EventType, Severity, record
from core.exchange import errors
from core.locks import HeldLock, LockLost, LockNotAcquired, StaleFence
from core.services import protection, snapshot, zombies
from core.services.closing import Exit, close_position, settle_external_close
from core.services.deps import Deps
from core.services.opening import Opening, open_position
from core.services.positions import NewPosition, context, create_position, open_position_for
from core.services.positions import update as update_position
from core.services.stop_fill import external_close_reason

GUARDIAN = "reconciliation"


@dataclass
class ReconciliationReport:
    exchange_positions: int = 0
    db_positions: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    phantoms_closed: int = 0
    adopted: int = 0
    quantities_corrected: int = 0
    side_mismatches: int = 0
    duplicates: int = 0
    resolved: int = 0
    waiting: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    zombies_cancelled: int = 0

    def counts(self) -> dict[str, Any]:
        return asdict(self)


def recon_params(deps: Deps) -> ReconParams:
    return ReconParams(
        intermediate_grace=timedelta(seconds=deps.settings.intermediate_state_grace_seconds)
    )


def _db_positions(session: Session, exchange: str, recent: datetime) -> list[DbPosition]:
    """Every non-terminal row, plus terminal rows changed since ``recent`` (they make an
    exchange position on their symbol wait: the exchange read may predate their close)."""
    rows = session.scalars(
        select(Position).where(
            Position.exchange == exchange,
            or_(
                Position.status.in_([s.value for s in NON_TERMINAL]),
                and_(
                    Position.status.in_([s.value for s in TERMINAL]),
                    Position.updated_at >= recent,
                ),
            ),
        )
    ).all()
    return [DbPosition.of(p) for p in rows]


def _step_sizes(deps: Deps, symbols: set[str]) -> dict[str, Decimal]:
    """Lot step per symbol: quantities less than one step apart agree (``less_than_a_lot``;
    cached markets, no request)."""
    steps: dict[str, Decimal] = {}
    for symbol in symbols:
        try:
            steps[symbol] = deps.exchange.rules(symbol).step_size
        except errors.SymbolUnavailable:
            continue  # not trading: compare exactly
    return steps


def reconcile_positions(deps: Deps) -> ReconciliationReport:
    """One reconciliation cycle for this exchange (see module doc)."""
    report = ReconciliationReport()
    deps.record_alone(EventType.SYNCHRONIZATION_STARTED, exchange=deps.exchange_name)
    snap = snapshot.take_or_record(deps, GUARDIAN, with_orders=False)
    params = recon_params(deps)
    with deps.unit_of_work() as session:
        db = _db_positions(
            session, deps.exchange_name, deps.clock.now() - params.intermediate_grace
        )
    on_exchange = snap.domain_positions()
    report.exchange_positions = len(on_exchange)
    report.db_positions = sum(1 for p in db if p.status not in TERMINAL)
    steps = _step_sizes(deps, {p.symbol for p in on_exchange} | {p.symbol for p in db})
    actions = reconcile(deps.exchange_name, db, on_exchange, deps.clock.now(), params, steps)
    report.actions = dict(Counter(a.kind.value for a in actions))
    settled: list[str] = []
    for action in actions:
        _act(deps, action, report, settled)
    if settled:
        try:
            cleanup = zombies.cleanup_zombies(deps, symbols=frozenset(settled))
            report.zombies_cancelled = cleanup.cancelled
        except errors.ExchangeFailure:
            report.failed += 1  # recorded by the snapshot; the zombie beat catches it later
    deps.record_alone(
        EventType.SYNCHRONIZATION_COMPLETED,
        exchange=deps.exchange_name,
        **report.counts(),
    )
    return report


def _act(deps: Deps, action: ReconAction, report: ReconciliationReport, settled: list[str]) -> None:
    """Dispatch one difference; a failure is recorded and the cycle goes on."""
    handler = HANDLERS.get(action.kind)
    if handler is None:  # WAIT: an opening or a close owns the symbol right now
        report.waiting += 1
        return
    try:
        outcome = handler(deps, action)
    except LockNotAcquired:
        report.deferred += 1
        return
    except (errors.ExchangeFailure, StaleFence, LockLost) as exc:
        report.failed += 1
        deps.record_alone(
            EventType.EXCHANGE_ERROR
            if isinstance(exc, errors.ExchangeFailure)
            else EventType.LOCK_STALE_WRITE_REJECTED,
            severity=Severity.WARNING,
            ctx=_ctx(deps, action),
            guardian=GUARDIAN,
            action=action.kind,
            error=str(exc),
        )
        return
    _tally(report, action, outcome, settled)


def _tally(
    report: ReconciliationReport, action: ReconAction, outcome: str, settled: list[str]
) -> None:
    if outcome != "done":
        report.skipped += 1
        return
    kind = action.kind
    if kind is ReconKind.CLOSE_PHANTOM:
        report.phantoms_closed += 1
        settled.append(action.symbol)
    elif kind is ReconKind.ADOPT_MISSING:
        report.adopted += 1
    elif kind is ReconKind.CORRECT_QUANTITY:
        report.quantities_corrected += 1
    elif kind is ReconKind.SIDE_MISMATCH:
        report.side_mismatches += 1
    elif kind is ReconKind.DUPLICATE_DB:
        report.duplicates += 1
    elif kind is ReconKind.RESOLVE_INTERMEDIATE:
        report.resolved += 1


def _ctx(deps: Deps, action: ReconAction) -> EventContext:
    db = action.db_position
    return EventContext(
        exchange=deps.exchange_name,
        symbol=action.symbol,
        position_id=int(db.id) if db is not None else None,
    )


def _position_ctx(deps: Deps, position_id: int) -> EventContext:
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        assert position is not None
        return context(position)


def _exchange_data(position: ExchangePosition | None) -> dict[str, Any]:
    if position is None:
        return {}
    return {
        "exchange_side": position.side,
        "exchange_quantity": position.quantity,
        "exchange_entry_price": position.entry_price,
        "position_idx": position.position_idx,
    }


def _fresh_position(deps: Deps, symbol: str, side: Side | None = None) -> ExchangePosition | None:
    """The exchange's position on ``symbol`` now (one call): the re-check under the lock."""
    for p in deps.exchange.positions():
        if p.symbol == symbol and (side is None or p.side == side):
            return p.to_domain()
    return None


@contextmanager
def _rechecked(
    deps: Deps, symbol: str, side: Side
) -> Iterator[tuple[HeldLock, ExchangePosition | None]]:
    """The symbol's lock, and the exchange's position on it read again once the lock is
    held: a repair acts on what the exchange has now, not on what the cycle's reading saw."""
    with snapshot.guardian_lock(deps, symbol) as held:
        yield held, _fresh_position(deps, symbol, side)


# --- handlers: each returns "done" when it changed (or flagged) something ---------------------


def _close_phantom(deps: Deps, action: ReconAction) -> str:
    db = action.db_position
    assert db is not None
    ctx = _position_ctx(deps, int(db.id))
    deps.record_alone(
        EventType.PHANTOM_POSITION_DETECTED,
        ctx=ctx,
        status=db.status,
        quantity=db.quantity,
        reason=action.reason,
    )
    reason = external_close_reason(deps, int(db.id), db.symbol)  # a lost stop fill is no phantom
    if not settle_external_close(deps, int(db.id), reason, sweep_zombies=False):
        return "still open"  # the exchange had it after all, under the lock
    with deps.unit_of_work() as session:
        position = session.get(Position, int(db.id))
        assert position is not None
        record(
            session,
            EventType.PHANTOM_POSITION_CLOSED if reason == "phantom" else EventType.STOP_TRIGGERED,
            ctx=ctx,
            source="reconciliation",
            **Exit.of(position).reported(),
        )
    return "done"


def _adopt_missing(deps: Deps, action: ReconAction) -> str:
    seen = action.exchange_position
    assert seen is not None
    with _rechecked(deps, action.symbol, seen.side) as (held, current):
        if current is None or current.position_idx != seen.position_idx:
            return "gone"
        with deps.unit_of_work() as session:
            if open_position_for(session, deps.exchange_name, action.symbol) is not None:
                return "tracked"  # an opening (or another reconciliation) got there first
            position = create_position(
                session,
                NewPosition(
                    exchange=deps.exchange_name,
                    symbol=action.symbol,
                    side=current.side.value,
                    status=PositionStatus.PENDING_SL,
                    quantity=current.quantity,
                    entry_price=current.entry_price,
                ),
                source=GUARDIAN,
            )
            if position is None:
                return "refused"  # the unique index saw an opening commit in between
            record(
                session,
                EventType.MISSING_POSITION_ADDED,
                ctx=context(position),
                reason=action.reason,
                **_exchange_data(current),
            )
            position_id = position.id
        # the same locked section places the stop: nothing acts on the symbol in between
        Opening(deps, held, position_id, may_send_entry=False).drive()
    return "done"


def _correct_quantity(deps: Deps, action: ReconAction) -> str:
    db = action.db_position
    assert db is not None
    with _rechecked(deps, action.symbol, db.side) as (held, current):
        if current is None:
            return "gone"  # a phantom now: the next cycle settles it
        tolerance = _step_sizes(deps, {action.symbol}).get(action.symbol, Decimal(0))
        with deps.unit_of_work() as session:
            position = session.get(Position, int(db.id), populate_existing=True)
            assert position is not None
            if position.status != PositionStatus.ACTIVE:
                return "not active"
            if less_than_a_lot(abs(position.quantity - current.quantity), tolerance):
                return "agrees now"
            record(
                session,
                EventType.QUANTITY_MISMATCH,
                ctx=context(position),
                db_quantity=position.quantity,
                exchange_quantity=current.quantity,
            )
            update_position(session, position, held.token, quantity=current.quantity)
        protection.protect_locked(deps, held, int(db.id))
    return "done"


def _side_mismatch(deps: Deps, action: ReconAction) -> str:
    db = action.db_position
    assert db is not None
    deps.record_alone(
        EventType.SIDE_MISMATCH,
        ctx=_position_ctx(deps, int(db.id)),
        db_side=db.side,
        db_quantity=db.quantity,
        reason=action.reason,
        **_exchange_data(action.exchange_position),
    )
    return "done"


def _duplicate(deps: Deps, action: ReconAction) -> str:
    deps.record_alone(
        EventType.DUPLICATE_POSITION_DETECTED,
        ctx=_ctx(deps, action),
        reason=action.reason,
    )
    return "done"


def _resolve_intermediate(deps: Deps, action: ReconAction) -> str:
    """Hand a position stuck in an intermediate state to the path that owns that state."""
    db = action.db_position
    assert db is not None
    position_id = int(db.id)
    with deps.unit_of_work() as session:
        position = session.get(Position, position_id)
        assert position is not None
        resume_close = (
            position.status == PositionStatus.CLOSING and position.close_reason != "rollback"
        )
        reason = position.close_reason or GUARDIAN
    if resume_close:
        close_position(deps, position_id, reason)
        outcome = "closed"
    else:
        outcome = open_position(deps, position_id, count_attempt=False).value
    deps.record_alone(
        EventType.POSITION_RECOVERED,
        ctx=_position_ctx(deps, position_id),
        outcome=outcome,
        stuck_in=db.status,
        source=GUARDIAN,
    )
    return "done"


HANDLERS: dict[ReconKind, Callable[[Deps, ReconAction], str]] = {
    ReconKind.CLOSE_PHANTOM: _close_phantom,
    ReconKind.ADOPT_MISSING: _adopt_missing,
    ReconKind.CORRECT_QUANTITY: _correct_quantity,
    ReconKind.SIDE_MISMATCH: _side_mismatch,
    ReconKind.DUPLICATE_DB: _duplicate,
    ReconKind.RESOLVE_INTERMEDIATE: _resolve_intermediate,
}
