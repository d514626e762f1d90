"""The position state machine: which status may follow which, as data.

Why a table: the old bot let any code path write any status, which is how positions ended up
``active`` without a stop or stuck in intermediate states. Here every change goes through
``next_status``; an illegal one raises before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any


class PositionStatus(StrEnum):
    PENDING_ENTRY = "pending_entry"
    ENTRY_PLACED = "entry_placed"
    PENDING_SL = "pending_sl"
    ACTIVE = "active"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class PositionTrigger(StrEnum):
    """What happened; the table maps (status, trigger) to the next status."""

    ENTRY_SENT = "entry_sent"
    ENTRY_FILLED = "entry_filled"
    ENTRY_REJECTED = "entry_rejected"
    ENTRY_NOT_FOUND = "entry_not_found"
    STOP_PLACED = "stop_placed"
    STOP_FAILED = "stop_failed"
    ROLLBACK_DONE = "rollback_done"
    CLOSE_REQUESTED = "close_requested"
    CLOSED_ON_EXCHANGE = "closed_on_exchange"
    CLOSE_FAILED = "close_failed"


S = PositionStatus
T = PositionTrigger

TERMINAL: frozenset[PositionStatus] = frozenset({S.CLOSED, S.FAILED, S.ROLLED_BACK})
NON_TERMINAL: frozenset[PositionStatus] = frozenset(set(PositionStatus) - TERMINAL)
INTERMEDIATE: frozenset[PositionStatus] = frozenset({S.PENDING_ENTRY, S.ENTRY_PLACED, S.PENDING_SL})
OPEN_ON_EXCHANGE: frozenset[PositionStatus] = frozenset({S.PENDING_SL, S.ACTIVE, S.CLOSING})

TRANSITIONS: dict[tuple[PositionStatus, PositionTrigger], PositionStatus] = {
    # the atomic open
    (S.PENDING_ENTRY, T.ENTRY_SENT): S.ENTRY_PLACED,
    (S.PENDING_ENTRY, T.ENTRY_REJECTED): S.FAILED,
    (S.PENDING_ENTRY, T.ENTRY_NOT_FOUND): S.FAILED,
    (S.ENTRY_PLACED, T.ENTRY_FILLED): S.PENDING_SL,
    (S.ENTRY_PLACED, T.ENTRY_REJECTED): S.FAILED,
    (S.ENTRY_PLACED, T.ENTRY_NOT_FOUND): S.FAILED,
    (S.PENDING_SL, T.STOP_PLACED): S.ACTIVE,
    (S.PENDING_SL, T.STOP_FAILED): S.CLOSING,
    # rollback of an entry whose stop could not be placed
    (S.CLOSING, T.ROLLBACK_DONE): S.ROLLED_BACK,
    # closes: by the engine (aged, manual), or observed on the exchange (stop hit, by hand)
    (S.ACTIVE, T.CLOSE_REQUESTED): S.CLOSING,
    (S.ACTIVE, T.CLOSED_ON_EXCHANGE): S.CLOSED,
    (S.PENDING_SL, T.CLOSED_ON_EXCHANGE): S.CLOSED,
    (S.CLOSING, T.CLOSED_ON_EXCHANGE): S.CLOSED,
    # a close that could not be done leaves the position open (protected by its stop or an
    # emergency stop) so protection and the aged path keep watching it
    (S.CLOSING, T.CLOSE_FAILED): S.ACTIVE,
}

# Where a record may start: an engine opening starts before the entry is sent; a position
# found on the exchange with no record (reconciliation's "missing") is adopted into
# pending_sl, so it gets its stop through the same path as a fresh entry.
INITIAL: frozenset[PositionStatus] = frozenset({S.PENDING_ENTRY, S.PENDING_SL})


class IllegalTransition(ValueError):
    """A (status, trigger) pair the table does not allow."""

    def __init__(self, status: PositionStatus, trigger: PositionTrigger) -> None:
        super().__init__(f"no transition from {status.value!r} on {trigger.value!r}")
        self.status = status
        self.trigger = trigger


def next_status(status: PositionStatus, trigger: PositionTrigger) -> PositionStatus:
    """The status after ``trigger``; raises IllegalTransition when the table has no entry."""
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(status, trigger) from None


def is_terminal(status: PositionStatus) -> bool:
    return status in TERMINAL


def allowed_triggers(status: PositionStatus) -> frozenset[PositionTrigger]:
    return frozenset(trigger for (src, trigger) in TRANSITIONS if src == status)


@dataclass(frozen=True)
class PositionFacts:
    """What every read-only view of a position row starts with (the invariant checks, the
    console's book): which position, where, which way, its status and how much."""

    id: int
    exchange: str
    symbol: str
    side: str
    status: str
    quantity: Decimal

    def facts(self) -> dict[str, Any]:
        """These fields by name: what a view built from another view carries over."""
        return {f.name: getattr(self, f.name) for f in fields(PositionFacts)}
