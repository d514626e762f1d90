"""The invariants' rules: what must be true of the database and the exchange, as pure
functions of one snapshot (plain rows and the exchange's orders and positions).

``core/services/invariants.py`` loads the snapshot and runs these; its module doc lists the
invariants. Here so that each rule is tested on plain values, and so that the guardians'
rules (what a stop is, what an engine order of a dead position is) are the same ones:
``core.domain.orders`` and ``core.domain.client_ids``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.domain.client_ids import of_position, parse_client_id
from core.domain.orders import ExchangeOrder, ExchangePosition, covers, stops_for
from core.domain.positions import (
    INTERMEDIATE,
    NON_TERMINAL,
    TERMINAL,
    PositionFacts,
    PositionStatus,
)
from core.domain.reconciliation import DbPosition, ReconKind, ReconParams, reconcile
from core.domain.sides import Side


class ViolationKind(StrEnum):
    DUPLICATE_POSITION = "duplicate_position"
    UNPROTECTED_POSITION = "unprotected_position"
    SURPLUS_STOP = "surplus_stop"
    STALE_OPENING = "stale_opening"
    ORPHAN_ORDER = "orphan_order"
    ORPHAN_TRAILING = "orphan_trailing"
    ORPHAN_AGED = "orphan_aged"
    MISSING_TRANSITION_EVENT = "missing_transition_event"
    POSITION_MISMATCH = "position_mismatch"


@dataclass(frozen=True)
class Violation:
    kind: ViolationKind
    detail: str
    exchange: str | None = None
    symbol: str | None = None
    position_id: int | None = None
    order_id: str | None = None  # the exchange's order id (orphan orders)
    client_order_id: str | None = None
    conditional: bool = False  # the order lives in the conditional (algo) book

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}

    @classmethod
    def of_position(cls, kind: ViolationKind, detail: str, row: PositionRow) -> Violation:
        """A violation about one position: where it is and which it is, from its row."""
        return cls(kind, detail, exchange=row.exchange, symbol=row.symbol, position_id=row.id)


@dataclass(frozen=True)
class InvariantReport:
    exchange: str
    checked_at: datetime
    violations: tuple[Violation, ...]
    errors: tuple[str, ...] = ()  # checks that could not run (exchange unreachable, ...)
    positions_checked: int = 0
    orders_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.violations and not self.errors

    def of_kind(self, kind: ViolationKind) -> list[Violation]:
        return [v for v in self.violations if v.kind is kind]

    def counts(self) -> dict[str, int]:
        out = {kind.value: 0 for kind in ViolationKind}
        for v in self.violations:
            out[v.kind.value] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "checked_at": self.checked_at.isoformat(),
            "clean": self.clean,
            "counts": self.counts(),
            "violations": [v.as_dict() for v in self.violations],
            "errors": list(self.errors),
            "positions_checked": self.positions_checked,
            "orders_checked": self.orders_checked,
        }


@dataclass(frozen=True)
class PositionRow(PositionFacts):
    """What the checks need of a position row."""

    correlation_id: str
    close_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def in_flight(self) -> bool:
        """An opening, or a rollback, that its own path (or recovery) still owns."""
        status = PositionStatus(self.status)
        return status in INTERMEDIATE or (
            status is PositionStatus.CLOSING and self.close_reason == "rollback"
        )


@dataclass(frozen=True)
class StatusEvent:
    """A ``position_created`` (``to_status`` = the initial status) or status-change event."""

    position_id: int
    from_status: str | None
    to_status: str | None


@dataclass(frozen=True)
class StateRow:
    """A trailing or aged row with its position's status."""

    position_id: int
    symbol: str
    status: str


# --- the pure checks ------------------------------------------------------------------------


def find_duplicates(rows: Iterable[PositionRow]) -> list[Violation]:
    by_key: dict[tuple[str, str], list[PositionRow]] = defaultdict(list)
    for row in rows:
        if PositionStatus(row.status) in NON_TERMINAL:
            by_key[(row.exchange, row.symbol)].append(row)
    return [
        Violation(
            ViolationKind.DUPLICATE_POSITION,
            f"{len(group)} non-terminal positions: "
            + ", ".join(f"{r.id} ({r.status})" for r in group),
            exchange=exchange,
            symbol=symbol,
            position_id=group[0].id,
        )
        for (exchange, symbol), group in sorted(by_key.items())
        if len(group) > 1
    ]


def find_unprotected(
    rows: Iterable[PositionRow],
    orders: Sequence[ExchangeOrder],
    exchange_positions: Sequence[ExchangePosition] | None = None,
) -> list[Violation]:
    """Active positions without a live stop covering them.

    With ``exchange_positions`` the quantity to cover is the exchange's, and a position the
    exchange does not have is left to the mismatch check (a phantom needs no stop). Without
    it (the health endpoint's one batch read of orders) the DB quantity is used.
    """
    on_exchange = {(p.symbol, p.side.value): p for p in exchange_positions or ()}
    found: list[Violation] = []
    for row in rows:
        if row.status != PositionStatus.ACTIVE:
            continue
        side = Side(row.side)
        ex = on_exchange.get((row.symbol, row.side))
        if exchange_positions is not None and ex is None:
            continue
        quantity = ex.quantity if ex is not None else row.quantity
        stops = stops_for(
            None,
            orders,
            symbol=row.symbol,
            side=side,
            position_idx=ex.position_idx if ex is not None else 0,
        )
        if not stops:
            detail = f"{row.side} {quantity} has no live stop on the exchange"
        elif not any(covers(stop, quantity) for stop in stops):
            biggest = max(stop.quantity for stop in stops)
            detail = f"{row.side} {quantity}: the largest live stop covers only {biggest}"
        else:
            continue
        found.append(
            Violation.of_position(
                ViolationKind.UNPROTECTED_POSITION,
                detail,
                row,
            )
        )
    return found


def find_stale_openings(
    rows: Iterable[PositionRow], now: datetime, grace: timedelta
) -> list[Violation]:
    return [
        Violation.of_position(
            ViolationKind.STALE_OPENING,
            f"{row.status} for {_age(now - row.updated_at)} (grace {_age(grace)})",
            row,
        )
        for row in rows
        if row.in_flight and now - row.updated_at > grace
    ]


def find_surplus_stops(
    rows: Iterable[PositionRow],
    orders: Sequence[ExchangeOrder],
    exchange_positions: Sequence[ExchangePosition],
) -> list[Violation]:
    """Active positions with more than one live stop: each should have exactly one.

    Two stops would each close the position, and the second one would then open a
    position in the other direction if it is not reduce-only on every venue. A trailing
    move places the new stop before cancelling the old one, so a check that lands inside
    that instant sees two; a surplus that outlives the protection interval is real.
    """
    on_exchange = {(p.symbol, p.side.value): p for p in exchange_positions}
    found: list[Violation] = []
    for row in rows:
        ex = on_exchange.get((row.symbol, row.side))
        if row.status != PositionStatus.ACTIVE or ex is None:
            continue
        stops = stops_for(ex, orders)
        if len(stops) > 1:
            found.append(
                Violation.of_position(
                    ViolationKind.SURPLUS_STOP,
                    f"{row.side} {ex.quantity} has {len(stops)} live stops "
                    f"({', '.join(sorted(str(o.trigger_price) for o in stops))})",
                    row,
                )
            )
    return found


def find_orphan_orders(
    exchange: str,
    orders: Sequence[ExchangeOrder],
    owners: Mapping[int, PositionRow],
    exchange_positions: Sequence[ExchangePosition],
    busy_symbols: frozenset[str] = frozenset(),
) -> list[Violation]:
    """Orders whose reason to exist is gone.

    ``owners``: the DB rows of every position id found in the orders' client ids. An id
    whose tag does not match the row's correlation id belongs to an earlier database's
    position: it has no owner here. ``busy_symbols``: symbols with an opening in flight,
    whose orders may precede the position the snapshot shows.
    """
    held = {p.symbol for p in exchange_positions if p.quantity > 0}
    found: list[Violation] = []
    for order in orders:
        if order.symbol in busy_symbols:
            continue
        reason = _orphan_reason(order, owners, held)
        if reason is not None:
            found.append(
                Violation(
                    ViolationKind.ORPHAN_ORDER,
                    reason,
                    exchange=exchange,
                    symbol=order.symbol,
                    position_id=_owner_id(order, owners),
                    order_id=order.id,
                    client_order_id=order.client_id,
                    conditional=order.is_conditional,
                )
            )
    return found


def _owner_id(order: ExchangeOrder, owners: Mapping[int, PositionRow]) -> int | None:
    parsed = parse_client_id(order.client_id)
    if parsed is None:
        return None
    row = owners.get(parsed.position_id)
    return row.id if row is not None and of_position(parsed, row.correlation_id) else None


def _orphan_reason(
    order: ExchangeOrder, owners: Mapping[int, PositionRow], held: set[str]
) -> str | None:
    parsed = parse_client_id(order.client_id)
    if parsed is not None:
        row = owners.get(parsed.position_id)
        if row is None or not of_position(parsed, row.correlation_id):
            return f"{parsed.purpose} order {order.client_id} of an unknown position"
        if PositionStatus(row.status) in TERMINAL:
            return f"{parsed.purpose} order of position {row.id}, which is {row.status}"
    if order.needs_a_position and order.symbol not in held:
        return f"{order.type} {'reduce-only ' if order.reduce_only else ''}order with no position"
    return None


def find_orphan_state(trailing: Iterable[StateRow], aged: Iterable[StateRow]) -> list[Violation]:
    found: list[Violation] = []
    for kind, rows in (
        (ViolationKind.ORPHAN_TRAILING, trailing),
        (ViolationKind.ORPHAN_AGED, aged),
    ):
        found.extend(
            Violation(
                kind,
                f"{kind.value.split('_')[1]} row of a {row.status} position",
                symbol=row.symbol,
                position_id=row.position_id,
            )
            for row in rows
            if PositionStatus(row.status) in TERMINAL
        )
    return found


def find_missing_transition_events(
    rows: Iterable[PositionRow], events: Mapping[int, Sequence[StatusEvent]]
) -> list[Violation]:
    """Each position's events must tell its path: created as X, X -> Y, ..., -> current."""
    found = []
    for row in rows:
        gap = _first_gap(row, events.get(row.id, ()))
        if gap is not None:
            found.append(
                Violation.of_position(
                    ViolationKind.MISSING_TRANSITION_EVENT,
                    gap,
                    row,
                )
            )
    return found


def _first_gap(row: PositionRow, events: Sequence[StatusEvent]) -> str | None:
    if not events or events[0].from_status is not None:
        return "no position_created event"
    status = events[0].to_status
    for event in events[1:]:
        if event.from_status != status:
            return f"no event for {status} -> {event.from_status}"
        status = event.to_status
    if status != row.status:
        return f"no event for {status} -> {row.status}"
    return None


def find_mismatches(
    exchange: str,
    rows: Sequence[PositionRow],
    exchange_positions: Sequence[ExchangePosition],
    now: datetime,
    grace: timedelta,
    step_sizes: Mapping[str, Decimal] | None = None,
) -> list[Violation]:
    """DB vs exchange, judged by reconciliation's own rules (in-flight positions wait)."""
    db = [DbPosition.of(r) for r in rows]
    reported = {ReconKind.CLOSE_PHANTOM, ReconKind.ADOPT_MISSING, ReconKind.CORRECT_QUANTITY}
    reported.add(ReconKind.SIDE_MISMATCH)
    actions = reconcile(
        exchange, db, exchange_positions, now, ReconParams(intermediate_grace=grace), step_sizes
    )
    return [
        Violation(
            ViolationKind.POSITION_MISMATCH,
            f"{action.kind.value}: {action.reason}",
            exchange=exchange,
            symbol=action.symbol,
            position_id=int(action.db_position.id) if action.db_position is not None else None,
        )
        for action in actions
        if action.kind in reported
    ]


def _age(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


# --- loading the snapshot -------------------------------------------------------------------
