"""Reproduce the duplicate-position race of seeds/003 against the running system.

The old bot opened a second position for a symbol 120-150 times a day: the signal path's
position left its unique index while in ``entry_placed``, and reconciliation, finding the
exchange position "missing", inserted another row (scenario B). Here N threads, for S
seconds, hammer the same few symbols with both paths at once: signal-style openings
(``create_position`` + the atomic open) and reconciliation-style adoptions (an exchange
position seen without looking at the DB first, inserted in ``pending_sl`` and protected),
plus closes to keep positions cycling through every status, while the running system's own
reconciliation is kicked as often as the caller likes.

Success is "refused duplicates > 0, actual duplicates = 0": the database refused every
second non-terminal row (the partial unique index over all non-terminal statuses), and no
symbol holds more on the exchange than its one DB position says (a second entry would).

Paper exchange only: it opens and closes real positions.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from core.db.models import Position
from core.db.session import unit_of_work
from core.domain.positions import INTERMEDIATE, NON_TERMINAL, PositionStatus
from core.exchange.errors import ExchangeFailure
from core.locks import LockNotAcquired, StaleFence
from core.services.closing import close_position
from core.services.deps import Deps, build_adapter
from core.services.invariants import Violation, db_duplicates
from core.services.opening import open_position
from core.services.positions import NewPosition, create_position, open_position_for

TAG = "repro"
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class LiveExchangeRefused(RuntimeError):
    """The reproduction trades; it runs against the paper exchange only."""


@dataclass
class ReproReport:
    threads: int
    duration: float
    symbols: tuple[str, ...]
    openings_attempted: int = 0
    openings_refused: int = 0
    adoptions_attempted: int = 0
    adoptions_refused: int = 0
    closes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    duplicates: list[Violation] = field(default_factory=list)
    excess_on_exchange: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)  # threads that died: run invalid

    @property
    def attempts(self) -> int:
        return self.openings_attempted + self.adoptions_attempted

    @property
    def refused(self) -> int:
        return self.openings_refused + self.adoptions_refused

    @property
    def actual_duplicates(self) -> int:
        return len(self.duplicates) + len(self.excess_on_exchange)

    def as_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "duration": self.duration,
            "symbols": list(self.symbols),
            "attempts": self.attempts,
            "openings_attempted": self.openings_attempted,
            "adoptions_attempted": self.adoptions_attempted,
            "refused_duplicates": self.refused,
            "closes": self.closes,
            "actual_duplicates": self.actual_duplicates,
            "duplicates": [v.as_dict() for v in self.duplicates],
            "excess_on_exchange": self.excess_on_exchange,
            "errors": dict(self.errors),
            "crashed": self.crashed,
        }


class _Race:
    def __init__(self, deps: Deps, report: ReproReport, deadline: float, seed: int) -> None:
        self.deps = deps
        self.report = report
        self.deadline = deadline
        self.rng = random.Random(seed)  # noqa: S311 - picks symbols, not secrets
        self.guard = threading.Lock()

    def count(self, name: str) -> None:
        with self.guard:
            setattr(self.report, name, getattr(self.report, name) + 1)

    def count_error(self, error: BaseException) -> None:
        with self.guard:
            self.report.errors[type(error).__name__] += 1

    def thread_deps(self) -> Deps:
        """Each thread its own exchange client (a ccxt session is not shared across threads)."""
        adapter = build_adapter(self.deps.settings)
        adapter.client.set_markets(self.deps.exchange.client.markets)
        return Deps(self.deps.settings, adapter, self.deps.redis, self.deps.clock)

    def run(self, index: int) -> None:
        try:
            self.race(index)
        except Exception as exc:  # noqa: BLE001 - a crashed thread must show in the report
            with self.guard:
                self.report.crashed.append(f"thread {index}: {type(exc).__name__}: {exc}")

    def race(self, index: int) -> None:
        deps = self.thread_deps()
        rng = random.Random(self.rng.random() + index)  # noqa: S311
        while time.monotonic() < self.deadline:
            symbol = rng.choice(self.report.symbols)
            roll = rng.random()
            try:
                if roll < 0.45:
                    self.open_once(deps, symbol, rng.choice(("long", "short")))
                elif roll < 0.8:
                    self.adopt_once(deps, symbol)
                else:
                    self.close_once(deps, symbol)
            except (ExchangeFailure, LockNotAcquired, StaleFence) as exc:
                self.count_error(exc)

    def open_once(self, deps: Deps, symbol: str, side: str) -> None:
        self.count("openings_attempted")
        correlation = f"{TAG}{uuid.uuid4().hex[:12]}"
        with unit_of_work() as session:
            position = create_position(
                session, NewPosition(deps.exchange_name, symbol, side, correlation_id=correlation)
            )
            position_id = position.id if position is not None else None
        if position_id is None:
            self.count("openings_refused")
            return
        open_position(deps, position_id)

    def adopt_once(self, deps: Deps, symbol: str) -> None:
        """Reconciliation's mistake on purpose: insert without checking the DB first."""
        held = [p for p in deps.exchange.positions() if p.symbol == symbol]
        if not held:
            return
        seen = held[0]
        self.count("adoptions_attempted")
        with unit_of_work() as session:
            position = create_position(
                session,
                NewPosition(
                    deps.exchange_name,
                    symbol,
                    seen.side,
                    status=PositionStatus.PENDING_SL,
                    quantity=seen.quantity,
                    entry_price=seen.entry_price,
                    correlation_id=f"{TAG}{uuid.uuid4().hex[:12]}",
                ),
                adopted=True,
            )
            position_id = position.id if position is not None else None
        if position_id is None:
            self.count("adoptions_refused")
            return
        open_position(deps, position_id, count_attempt=False)  # protect what was adopted

    def close_once(self, deps: Deps, symbol: str) -> None:
        with unit_of_work() as session:
            position = open_position_for(session, deps.exchange_name, symbol)
            position_id = None
            if position is not None and position.correlation_id.startswith(TAG):
                position_id = position.id if position.status == "active" else None
        if position_id is not None and close_position(deps, position_id, "repro"):
            self.count("closes")


def reproduce_duplicates(
    deps: Deps,
    *,
    threads: int,
    duration: float,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    kick_reconciliation: Callable[[], None] | None = None,
    kick_every: float = 0.5,
    seed: int = 1,
) -> ReproReport:
    """Race openings against adoptions for ``duration`` seconds, then count duplicates."""
    if deps.settings.exchange != "paper":
        raise LiveExchangeRefused("reproduce-duplicates trades: paper exchange only")
    deps.exchange.load_markets()  # once, shared with every thread's client
    report = ReproReport(threads, duration, tuple(symbols))
    race = _Race(deps, report, time.monotonic() + duration, seed)
    workers = [threading.Thread(target=race.run, args=(i,), daemon=True) for i in range(threads)]
    stop = threading.Event()
    kicker = None
    if kick_reconciliation is not None:
        kick = kick_reconciliation

        def kick_loop() -> None:
            while not stop.wait(kick_every):
                kick()

        kicker = threading.Thread(target=kick_loop, daemon=True)
        kicker.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    if kicker is not None:
        kicker.join()
    with unit_of_work() as session:
        report.duplicates = db_duplicates(session, deps.exchange_name)
    report.excess_on_exchange = _excess_on_exchange(deps, report.symbols)
    _wind_down(deps)
    return report


def _excess_on_exchange(deps: Deps, symbols: Sequence[str]) -> list[str]:
    """Symbols holding more on the exchange than their one DB position: a second entry."""
    excess = []
    with unit_of_work() as session:
        rows = {
            p.symbol: p
            for p in session.scalars(
                select(Position).where(
                    Position.exchange == deps.exchange_name,
                    Position.symbol.in_(list(symbols)),
                    Position.status.in_([s.value for s in NON_TERMINAL]),
                )
            )
        }
    for held in deps.exchange.positions():
        row = rows.get(held.symbol)
        if row is None or held.symbol not in symbols or row.status in INTERMEDIATE:
            continue
        if held.quantity > (row.quantity or Decimal(0)):
            excess.append(f"{held.symbol}: exchange {held.quantity} > DB {row.quantity}")
    return excess


def _wind_down(deps: Deps) -> None:
    """Finish and close what the reproduction opened, so the system is left as it was.

    Only its own positions (correlation ids tagged ``repro``): openings a failed call left
    in flight are driven on as recovery would, then everything active is closed.
    """
    for status in (INTERMEDIATE, {PositionStatus.ACTIVE}):
        for position_id in _own_positions(status):
            try:
                if status is INTERMEDIATE:
                    open_position(deps, position_id, count_attempt=False)
                else:
                    close_position(deps, position_id, "repro")
            except (ExchangeFailure, LockNotAcquired, StaleFence):
                continue  # left to the running system's guardians


def _own_positions(statuses: Collection[PositionStatus]) -> list[int]:
    with unit_of_work() as session:
        return list(
            session.scalars(
                select(Position.id)
                .where(
                    Position.correlation_id.like(f"{TAG}%"),
                    Position.status.in_([s.value for s in statuses]),
                )
                .order_by(Position.id)
            )
        )
