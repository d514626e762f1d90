"""Zombie orders: open orders that serve no position, found and cancelled.

One cycle (beat, every ``zombie_interval``; after reconciliation settles a phantom; or by
hand, optionally for some symbols only and as a dry run):

1. one snapshot of the exchange (positions, then every open order: three calls);
2. classify every order (``core.domain.zombies.classify_orders``) with what only the
   database knows: the engine's own client ids (its stop is the one kept among several)
   and the symbols whose orders are never judged: those with an opening or a close in
   flight (their position may not be visible yet, and that path cleans up after itself),
   and those where the database has an open position the exchange does not show (a
   phantom is reconciliation's to settle, and its close cancels the position's orders; a
   glitch in one positions read must never strip every stop off the account);
3. per symbol with zombies, under the symbol's lock: read the exchange again, classify
   again, and cancel only the orders that are zombies in both readings (a snapshot is
   stale by the time the lock is taken; an order that became useful in between stays).
   Conditional orders (stops) are cancelled through the conditional endpoint, the others
   through the regular one; retryable errors back off and retry.

A dry run stops after step 2: it records and returns what would be cancelled. More zombies
in one cycle than ``zombie_alert_threshold`` raises ZOMBIE_ALERT: something keeps leaving
orders behind, and a human should look.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from core.db.models import Position
from core.domain.positions import NON_TERMINAL, PositionStatus
from core.domain.reconciliation import RECON_INTERMEDIATE
from core.domain.zombies import ZombieParams, ZombieReport, ZombieVerdict, classify_orders
from core.events import EventType, record
from core.exchange import errors
from core.exchange.client_ids import parse_client_id
from core.locks import HeldLock, LockLost, LockNotAcquired
from core.services import snapshot
from core.services.deps import Deps
from core.services.executor import Executor

GUARDIAN = "zombies"


@dataclass(frozen=True)
class EngineView:
    """What the database says about one exchange's symbols, for classification."""

    busy_symbols: frozenset[str]  # an opening or a close in flight
    open_symbols: frozenset[str]  # any non-terminal position
    correlation_by_position: dict[int, str]

    def not_judged(self, snap: snapshot.ExchangeSnapshot) -> frozenset[str]:
        """Busy symbols, and symbols open in the DB but flat in this exchange reading."""
        flat = {s for s in self.open_symbols if snap.position(s) is None}
        return self.busy_symbols | flat


@dataclass
class ZombieCleanupReport:
    dry_run: bool = False
    open_orders: int = 0
    detected: int = 0
    cancelled: int = 0
    already_gone: int = 0
    failed: int = 0
    kept_on_recheck: int = 0
    deferred: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    zombies: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """The cycle's numbers (every field but the per-order list)."""
        return {k: v for k, v in asdict(self).items() if k != "zombies"}


def zombie_params(deps: Deps) -> ZombieParams:
    return ZombieParams(
        stale_entry_after=timedelta(seconds=deps.settings.zombie_stale_entry_seconds)
    )


def engine_view(deps: Deps) -> EngineView:
    with deps.unit_of_work() as session:
        rows = session.execute(
            select(Position.id, Position.symbol, Position.status, Position.correlation_id).where(
                Position.exchange == deps.exchange_name,
                Position.status.in_([s.value for s in NON_TERMINAL]),
            )
        ).all()
    busy = frozenset(
        symbol for _, symbol, status, _ in rows if PositionStatus(status) in RECON_INTERMEDIATE
    )
    return EngineView(
        busy,
        frozenset(symbol for _, symbol, _, _ in rows),
        {pid: correlation for pid, _, _, correlation in rows},
    )


def classify(
    deps: Deps, snap: snapshot.ExchangeSnapshot, view: EngineView, symbol: str | None = None
) -> ZombieReport:
    orders = snap.orders if symbol is None else tuple(snap.orders_on(symbol))
    return classify_orders(
        [o.to_domain() for o in orders],
        snap.domain_positions(symbol),
        deps.clock.now(),
        zombie_params(deps),
        known_client_ids=snapshot.engine_client_ids(orders, view.correlation_by_position),
        busy_symbols=view.not_judged(snap),
        positions_as_of=snap.positions_as_of,
    )


def cleanup_zombies(
    deps: Deps,
    *,
    dry_run: bool = False,
    symbols: Collection[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ZombieCleanupReport:
    """One zombie cycle (see module doc); ``symbols`` limits what is acted on."""
    report = ZombieCleanupReport(dry_run=dry_run)
    snap = snapshot.take_or_record(deps, GUARDIAN)
    view = engine_view(deps)
    verdicts = [
        v for v in classify(deps, snap, view).cancel if symbols is None or v.order.symbol in symbols
    ]
    report.open_orders = len(snap.orders)
    report.detected = len(verdicts)
    report.by_reason = dict(Counter(v.reason.value for v in verdicts))
    report.zombies = [_describe(v) for v in verdicts]
    if verdicts:
        _record_detected(deps, report)
    if not dry_run:
        by_symbol: dict[str, list[ZombieVerdict]] = defaultdict(list)
        for v in verdicts:
            by_symbol[v.order.symbol].append(v)
        for symbol, found in sorted(by_symbol.items()):
            _clean_symbol(deps, symbol, found, report, sleep)
    deps.record_alone(
        EventType.ZOMBIE_CLEANUP_COMPLETED,
        exchange=deps.exchange_name,
        symbols=sorted(symbols) if symbols is not None else None,
        **report.counts(),
    )
    return report


def _describe(verdict: ZombieVerdict) -> dict[str, Any]:
    o = verdict.order
    return {
        "symbol": o.symbol,
        "order_id": o.id,
        "client_id": o.client_id,
        "type": o.type,
        "side": o.side.value,
        "quantity": str(o.quantity),
        "conditional": o.is_conditional,
        "reason": verdict.reason.value,
        "detail": verdict.detail,
    }


def _record_detected(deps: Deps, report: ZombieCleanupReport) -> None:
    threshold = deps.settings.zombie_alert_threshold
    # what the detection and its alert both say: where, how many, and why
    found: dict[str, Any] = {
        "exchange": deps.exchange_name,
        "count": report.detected,
        "by_reason": report.by_reason,
    }
    with deps.unit_of_work() as session:
        record(
            session,
            EventType.ZOMBIE_ORDERS_DETECTED,
            dry_run=report.dry_run,
            orders=report.zombies,
            **found,
        )
        if report.detected > threshold:
            record(session, EventType.ZOMBIE_ALERT, threshold=threshold, **found)


def _clean_symbol(
    deps: Deps,
    symbol: str,
    found: list[ZombieVerdict],
    report: ZombieCleanupReport,
    sleep: Callable[[float], None],
) -> None:
    """Re-check one symbol under its lock; cancel what is a zombie in both readings."""
    try:
        with snapshot.guardian_lock(deps, symbol) as held:
            fresh = snapshot.take(deps)
            confirmed = {
                v.order.id for v in classify(deps, fresh, engine_view(deps), symbol).cancel
            }
            for verdict in found:
                if verdict.order.id not in confirmed:
                    report.kept_on_recheck += 1
                    continue
                _cancel(deps, held, verdict, report, sleep)
    except LockNotAcquired:
        report.deferred += len(found)
    except errors.ExchangeFailure as exc:  # the re-check read failed: leave it to next cycle
        report.deferred += len(found)
        deps.record_failure_warning(
            EventType.EXCHANGE_ERROR, exc, symbol=symbol, guardian=GUARDIAN, operation="re-check"
        )


def _cancel(
    deps: Deps,
    held: HeldLock,
    verdict: ZombieVerdict,
    report: ZombieCleanupReport,
    sleep: Callable[[float], None],
) -> None:
    order = verdict.order
    attempts = deps.settings.zombie_cancel_attempts
    error: errors.ExchangeFailure | LockLost | None = None
    gone: bool | None = None
    for attempt in range(attempts):
        try:
            held.extend()
            gone = not Executor.of(deps).cancel(
                order.symbol, order.id, conditional=order.is_conditional
            )
            error = None
            break
        except errors.Retryable as exc:
            error = exc
            if attempt + 1 < attempts:
                sleep(0.2 * 2**attempt)
        except (errors.Permanent, LockLost) as exc:
            error = exc
            break
    ours = parse_client_id(order.client_id)
    with deps.unit_of_work() as session:
        common: dict[str, Any] = {
            "exchange": deps.exchange_name,
            "symbol": order.symbol,
            "position_id": ours.position_id if ours else None,
            "order_id": order.client_id,
            "exchange_order_id": order.id,
            "reason": verdict.reason.value,
            "detail": verdict.detail,
            "conditional": order.is_conditional,
        }
        if error is None:
            record(session, EventType.ZOMBIE_ORDER_CANCELLED, already_gone=gone, **common)
        else:
            record(
                session,
                EventType.ZOMBIE_ORDER_CANCEL_FAILED,
                error=str(error),
                attempts=attempt + 1,
                **common,
            )
    if error is not None:
        report.failed += 1
    elif gone:
        report.already_gone += 1
    else:
        report.cancelled += 1
