"""What a run of the whole system did, read back from the durable record.

Shared by ``vigil demo`` and ``vigil chaos``: both end by asking the database (never the
processes' memory) what happened, so the report is exactly what an operator could verify.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select

from core.db.models import Event, Position, Signal
from core.db.session import unit_of_work


@dataclass
class RunFigures:
    positions_by_status: dict[str, int] = field(default_factory=dict)
    closed_by_reason: dict[str, int] = field(default_factory=dict)
    realized_pnl: Decimal = Decimal(0)
    stop_moves: int = 0
    trailing_activations: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    events_total: int = 0
    signals_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def opened(self) -> int:
        never_opened = {"failed", "pending_entry", "entry_placed"}
        return sum(n for s, n in self.positions_by_status.items() if s not in never_opened)


def collect() -> RunFigures:
    figures = RunFigures()
    with unit_of_work() as s:
        figures.positions_by_status = dict(
            s.execute(select(Position.status, func.count()).group_by(Position.status)).all()
        )
        figures.closed_by_reason = {
            reason or "unknown": n
            for reason, n in s.execute(
                select(Position.close_reason, func.count())
                .where(Position.status.in_(["closed", "rolled_back"]))
                .group_by(Position.close_reason)
            ).all()
        }
        pnl = s.execute(select(func.coalesce(func.sum(Position.realized_pnl), 0))).scalar_one()
        figures.realized_pnl = Decimal(str(pnl or 0))
        counts = Counter(
            dict(s.execute(select(Event.type, func.count()).group_by(Event.type)).all())
        )
        figures.signals_by_status = dict(
            s.execute(select(Signal.status, func.count()).group_by(Signal.status)).all()
        )
    figures.events_by_type = dict(counts.most_common())
    figures.events_total = sum(counts.values())
    figures.stop_moves = counts.get("trailing_stop_updated", 0)
    figures.trailing_activations = counts.get("trailing_stop_activated", 0)
    return figures
