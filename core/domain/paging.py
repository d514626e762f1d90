"""When does a failing part of the system page someone? Pure decisions, no I/O.

The watchdog (core/services/paging.py) evaluates the health components on a cadence and
hands each evaluation here. A component pages when it has been failing for ``confirm``
(one bad probe is not an incident; a worker ping lost once is not "no worker"), then again
every ``repeat`` while it stays down, and its recovery is reported once it was paged.

Two rules keep a page meaningful:

- **the database first**: while the database fails, every component that reads it fails
  too; only the database pages then, the others keep their tracking until it is back;
- **paged elsewhere**: a component with its own, better-informed alert (the exchange:
  counted over guardian cycles, core/services/paging.py) is tracked, and so counts against
  "all is well" for the dead-man's switch, but does not page from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

DATABASE = "database"


@dataclass(frozen=True, slots=True)
class Condition:
    """One health component as one evaluation saw it."""

    name: str
    failing: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tracked:
    """A component failing since ``since``; ``paged_at`` once it paged."""

    since: datetime
    paged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PagingParams:
    confirm: timedelta
    repeat: timedelta
    paged_elsewhere: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    detail: Mapping[str, Any]
    since: datetime
    repeat: bool


@dataclass(frozen=True, slots=True)
class Decision:
    pages: tuple[Page, ...]
    recovered: tuple[str, ...]
    tracked: Mapping[str, Tracked]
    all_well: bool
    """No component has been failing for ``confirm`` or longer (the dead-man's "ok")."""


def _due(tracked: Tracked, now: datetime, params: PagingParams) -> bool:
    if now - tracked.since < params.confirm:
        return False
    return tracked.paged_at is None or now - tracked.paged_at >= params.repeat


def decide(
    conditions: Iterable[Condition],
    tracked: Mapping[str, Tracked],
    now: datetime,
    params: PagingParams,
) -> Decision:
    """What to page now, what recovered, and the tracking to keep for the next evaluation."""
    seen = {c.name: c for c in conditions}
    failing = {name: c for name, c in seen.items() if c.failing}
    if DATABASE in failing:
        # the others read the database: keep their tracking as it was, page the cause only
        considered = {DATABASE: failing[DATABASE]}
        kept = {n: t for n, t in tracked.items() if n != DATABASE}
    else:
        considered, kept = failing, {}
    new: dict[str, Tracked] = dict(kept)
    pages: list[Page] = []
    for name, condition in considered.items():
        state = tracked.get(name) or Tracked(since=now)
        if name not in params.paged_elsewhere and _due(state, now, params):
            pages.append(Page(name, condition.detail, state.since, state.paged_at is not None))
            state = replace(state, paged_at=now)
        new[name] = state
    recovered = tuple(
        sorted(
            name
            for name, state in tracked.items()
            if state.paged_at is not None and name in seen and not seen[name].failing
        )
    )
    all_well = all(now - state.since < params.confirm for state in new.values())
    return Decision(tuple(pages), recovered, new, all_well)


READ_FAILURES_REPAGE_EVERY = 20


def read_failures_page(consecutive: int, threshold: int) -> bool:
    """Page at the ``threshold``-th consecutive failed guardian read, then every 20 more."""
    if consecutive < threshold:
        return False
    return (consecutive - threshold) % READ_FAILURES_REPAGE_EVERY == 0
