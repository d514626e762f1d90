"""Closing by hand: one position, or every position of the venue, through the one close path.

Why no close code here: ``core/services/closing.py``'s ``close_position`` is the one way the
engine ends a position (reduce-only market order, verified flat, leftover orders cancelled,
trailing and aged state removed, exit and PnL recorded, events written). A close by hand is
that path with reason ``manual``; this module only finds what to close and reports what
happened.

``close_all`` halts openings first (core/services/halts.py), so no wave opens a position
while the others are being closed, then closes every position of the venue;
``close_every_venue`` does it for each venue of the deployment (one halt covers them all).
A position still opening (entry sent, stop being placed) is waited for until its opening
settles, then closed; one that does not settle in time is reported, never guessed about.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Position
from core.domain.positions import INTERMEDIATE, NON_TERMINAL, TERMINAL, PositionStatus
from core.events import jsonable_fields
from core.exchange import errors
from core.locks import LockNotAcquired
from core.services import halts
from core.services.closing import close_position
from core.services.deps import Deps, UnitOfWork

MANUAL = "manual"


class PositionNotFound(LookupError):
    """No position with that id (or no open one on that symbol)."""


@dataclass(frozen=True, slots=True)
class CloseTarget:
    """A position as an operator sees it before closing it."""

    position_id: int
    exchange: str
    symbol: str
    side: str
    status: str
    quantity: Decimal
    entry_price: Decimal | None

    @classmethod
    def of(cls, p: Position) -> CloseTarget:
        return cls(p.id, p.exchange, p.symbol, p.side, p.status, p.quantity, p.entry_price)

    def as_dict(self) -> dict[str, Any]:
        return jsonable_fields(self)


@dataclass(frozen=True, slots=True)
class CloseResult:
    target: CloseTarget
    closed: bool
    status: str
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    close_reason: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        outcome = {k: v for k, v in jsonable_fields(self).items() if k != "target"}
        return {**self.target.as_dict(), **outcome}


@dataclass
class CloseAllReport:
    halt: halts.HaltState
    results: list[CloseResult] = field(default_factory=list)

    @property
    def all_closed(self) -> bool:
        return all(r.closed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "halt": self.halt.as_dict(),
            "closed": sum(1 for r in self.results if r.closed),
            "not_closed": sum(1 for r in self.results if not r.closed),
            "positions": [r.as_dict() for r in self.results],
        }


def open_targets(session: Session, exchange: str, symbol: str | None = None) -> list[CloseTarget]:
    """The venue's positions that are not finished (what a close by hand would act on)."""
    query = (
        select(Position)
        .where(
            Position.exchange == exchange,
            Position.status.in_([s.value for s in NON_TERMINAL]),
        )
        .order_by(Position.id)
    )
    if symbol is not None:
        query = query.where(Position.symbol == symbol.upper())
    return [CloseTarget.of(p) for p in session.scalars(query)]


def target(position_id: int, uow: UnitOfWork) -> CloseTarget:
    """The position by id, whatever its status; PositionNotFound if there is none.

    The caller hands its transactions in (a Deps' ``unit_of_work``): every venue's Deps
    reaches the one database, so a caller that does not know the position's venue yet (the
    API, before it picks that venue's Deps) passes its default venue's."""
    with uow() as session:
        position = session.get(Position, position_id)
        if position is None:
            raise PositionNotFound(f"no position {position_id}")
        return CloseTarget.of(position)


def target_on(deps: Deps, symbol: str) -> CloseTarget:
    """The open position on ``symbol`` on this venue; PositionNotFound if it has none."""
    with deps.unit_of_work() as session:
        found = open_targets(session, deps.exchange_name, symbol)
    if not found:
        raise PositionNotFound(f"no open position on {deps.exchange_name} {symbol.upper()}")
    return found[0]


def close_one(deps: Deps, position_id: int) -> CloseResult:
    """Close one position at market, reason ``manual``; a failure is reported, not raised.

    A failed close leaves the position ``active`` with its stop (closing.py's contract), so
    trying again is always safe.
    """
    before = target(position_id, deps.unit_of_work)
    error: str | None = None
    try:
        close_position(deps, position_id, MANUAL)
    except (errors.ExchangeFailure, LockNotAcquired) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return _result(deps, before, error)


def _result(deps: Deps, before: CloseTarget, error: str | None) -> CloseResult:
    with deps.unit_of_work() as session:
        position = session.get(Position, before.position_id)
        assert position is not None
        closed = PositionStatus(position.status) in TERMINAL
        return CloseResult(
            before,
            closed,
            position.status,
            position.exit_price,
            position.realized_pnl,
            position.close_reason,
            None if closed else error or f"position is {position.status}",
        )


def close_all(
    deps: Deps,
    halted_by: str,
    *,
    settle_timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CloseAllReport:
    """Halt openings, then close every position of this venue; see the module doc."""
    held = halts.halt("close-all", halted_by, now=deps.clock.now()).halt
    report = CloseAllReport(held)
    done: set[int] = set()
    deadline = time.monotonic() + settle_timeout
    while True:
        with deps.unit_of_work() as session:
            pending = [
                t for t in open_targets(session, deps.exchange_name) if t.position_id not in done
            ]
        opening = [t for t in pending if PositionStatus(t.status) in INTERMEDIATE]
        for item in pending:
            if item in opening:
                continue
            report.results.append(close_one(deps, item.position_id))
            done.add(item.position_id)
        if not opening:
            return report
        if time.monotonic() >= deadline:
            for item in opening:
                report.results.append(_result(deps, item, "still opening; not closed"))
            return report
        sleep(0.25)


def close_every_venue(
    venues: list[Deps], halted_by: str, *, settle_timeout: float = 30.0
) -> CloseAllReport:
    """``close_all`` on each venue in turn: the halt (of every venue) comes before the first
    close, and one venue's failed close does not keep the next venue's from being tried."""
    if not venues:
        raise ValueError("no venue to close on")
    report: CloseAllReport | None = None
    for deps in venues:
        one = close_all(deps, halted_by, settle_timeout=settle_timeout)
        if report is None:
            report = one
        else:
            report.results.extend(one.results)
    assert report is not None
    return report
