"""Orphan-state cleanup: trailing/aged rows of ended positions, bands of symbols with none.

Why it exists although it should find nothing: every close path ends in
``closing.finish``, which deletes the trailing and aged rows with the status change, and the
foreign keys cascade on delete; the tests prove it per close path. The old bot leaked 29
trailing rows through one forgotten path (seeds/000), and the next forgotten path would leak
silently. So this pass runs at worker start and hourly, removes what it finds, and writes one
ORPHAN_STATE_CLEANED event with the counts: a non-zero count is a warning that names a bug.

Orphans, per exchange:

- a ``trailing_stops`` or ``aged_positions`` row whose position is terminal
  (closed, failed, rolled back);
- a symbol's band hash in Redis while the symbol has no non-terminal position: nothing can
  act on its ticks, yet the ingest would enqueue price tasks for them. Removed under the
  symbol lock after re-checking, because an opening takes the same lock before it can
  publish a band.

``dry_run`` reports without changing anything (the event says so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from core.db.models import AgedPosition, Position, TrailingStop
from core.domain.positions import NON_TERMINAL, TERMINAL
from core.events import EventType, Severity, record
from core.locks import LockNotAcquired
from core.services import bands
from core.services.closing import lock_for
from core.services.deps import Deps

TERMINAL_VALUES = sorted(s.value for s in TERMINAL)
NON_TERMINAL_VALUES = sorted(s.value for s in NON_TERMINAL)


@dataclass(frozen=True)
class OrphanReport:
    dry_run: bool
    trailing: list[int]  # position ids whose trailing row was (or would be) removed
    aged: list[int]  # position ids whose aged row was (or would be) removed
    bands: list[str]  # symbols whose band hash was (or would be) removed
    busy: list[str]  # orphan-looking bands skipped because their symbol lock was busy

    @property
    def found(self) -> int:
        return len(self.trailing) + len(self.aged) + len(self.bands)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "found": self.found}


def clean_orphans(deps: Deps, *, dry_run: bool = False) -> OrphanReport:
    """Find (and unless ``dry_run`` remove) orphan trailing/aged rows and bands; one event."""
    exchange = deps.exchange_name
    band_symbols, busy = _orphan_bands(deps, apply=not dry_run)
    with deps.unit_of_work() as session:
        trailing = _orphan_rows(session, TrailingStop, exchange, apply=not dry_run)
        aged = _orphan_rows(session, AgedPosition, exchange, apply=not dry_run)
        report = OrphanReport(dry_run, trailing, aged, band_symbols, busy)
        record(
            session,
            EventType.ORPHAN_STATE_CLEANED,
            severity=Severity.WARNING if report.found and not dry_run else Severity.INFO,
            exchange=exchange,
            dry_run=dry_run,
            trailing_rows=len(trailing),
            aged_rows=len(aged),
            bands=len(band_symbols),
            position_ids=sorted(set(trailing) | set(aged)),
            symbols=band_symbols,
            busy_symbols=busy,
        )
    return report


def _orphan_rows(
    session: Session, model: type[TrailingStop] | type[AgedPosition], exchange: str, *, apply: bool
) -> list[int]:
    ended = select(Position.id).where(
        Position.exchange == exchange, Position.status.in_(TERMINAL_VALUES)
    )
    if not apply:
        found = session.scalars(
            select(model.position_id)
            .where(model.position_id.in_(ended))
            .order_by(model.position_id)
        )
        return list(found)
    removed = session.scalars(
        delete(model).where(model.position_id.in_(ended)).returning(model.position_id)
    )
    return sorted(removed)


def _orphan_bands(deps: Deps, *, apply: bool) -> tuple[list[str], list[str]]:
    exchange = deps.exchange_name
    return drop_orphan_bands(
        deps,
        bands.tracked_symbols(deps.redis, exchange),
        lambda symbols: select(Position.symbol).where(
            Position.exchange == exchange,
            Position.symbol.in_(symbols),
            Position.status.in_(NON_TERMINAL_VALUES),
        ),
        lambda symbol: bands.components(deps.redis, exchange, symbol),
        apply=apply,
    )


def drop_orphan_bands(
    deps: Deps,
    watched: list[str],
    backing: Callable[[list[str]], Select[str]],
    components_of: Callable[[str], Iterable[str]],
    *,
    apply: bool = True,
) -> tuple[list[str], list[str]]:
    """Remove the band components (``components_of``) of the ``watched`` symbols that no
    database row backs any more (``backing``: the query of the backed ones among some).

    Each is re-checked under the symbol's lock before it goes: whoever creates the backing
    row (an opening, an aged detection) holds that lock when it publishes a band, so a band
    published meanwhile stays. Returns (removed, busy); a busy symbol is left to the next
    pass. Without ``apply``: what would be removed, nothing changed.
    """
    exchange = deps.exchange_name

    def backed(symbols: list[str]) -> set[str]:
        if not symbols:
            return set()
        with deps.unit_of_work() as session:
            return set(session.scalars(backing(symbols)))

    orphans = sorted(set(watched) - backed(watched))
    if not apply:
        return orphans, []
    removed: list[str] = []
    busy: list[str] = []
    for symbol in orphans:
        try:
            with lock_for(deps, exchange, symbol):
                if backed([symbol]):
                    continue  # backed again meanwhile: its band is not an orphan
                for component in components_of(symbol):
                    bands.publish(deps.redis, exchange, symbol, component, None)
        except LockNotAcquired:
            busy.append(symbol)
            continue
        removed.append(symbol)
    return removed, busy
