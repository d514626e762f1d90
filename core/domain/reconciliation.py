"""Reconciliation: the diff between the database's positions and the exchange's.

The exchange is the source of truth. Why the grace rules: the old bot's reconciliation ran
concurrently with openings and "adopted" a position the signal path was still opening,
producing duplicates (seeds/003), and closed positions in the DB whose close it simply had
not seen yet. Here:

- A position in an intermediate status (``pending_entry``, ``entry_placed``,
  ``pending_sl``, ``closing``) is never phantom and never makes an exchange position
  "missing" while it is younger (``updated_at``) than ``intermediate_grace``: it belongs to
  the opening/closing path. Older, it is handed to recovery (``RESOLVE_INTERMEDIATE``)
  rather than guessed at here: recovery looks its orders up by client id.
- An exchange position whose symbol was closed in the DB within ``intermediate_grace`` is
  not adopted yet (the position snapshot may predate the close): ``WAIT``.
- Side mismatch is flagged critical and nothing is changed automatically (the DB position
  is gone and another one is open: a human or a bug did something the engine must not
  paper over).

Actions come out sorted by symbol, so a run is deterministic and its events diffable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from core.domain.numbers import ZERO
from core.domain.orders import ExchangePosition, less_than_a_lot
from core.domain.positions import INTERMEDIATE, TERMINAL, PositionStatus
from core.domain.severity import Severity
from core.domain.sides import OrderSide, Side
from core.domain.timeutil import require_aware

# ``closing`` is intermediate for reconciliation: the close path finalises it.
RECON_INTERMEDIATE: frozenset[PositionStatus] = INTERMEDIATE | {PositionStatus.CLOSING}


class ReconKind(StrEnum):
    CLOSE_PHANTOM = "close_phantom"
    ADOPT_MISSING = "adopt_missing"
    CORRECT_QUANTITY = "correct_quantity"
    SIDE_MISMATCH = "side_mismatch"
    DUPLICATE_DB = "duplicate_db"
    RESOLVE_INTERMEDIATE = "resolve_intermediate"
    WAIT = "wait"


class PositionRecord(Protocol):
    """What reconciliation reads of a stored position (a row, or a view of one)."""

    @property
    def id(self) -> int: ...
    @property
    def exchange(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def status(self) -> str: ...
    @property
    def updated_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class DbPosition:
    id: int | str
    exchange: str
    symbol: str
    side: Side
    quantity: Decimal
    status: PositionStatus
    updated_at: datetime

    @classmethod
    def of(cls, row: PositionRecord) -> DbPosition:
        return cls(
            row.id,
            row.exchange,
            row.symbol,
            Side(row.side),
            row.quantity,
            PositionStatus(row.status),
            row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class ReconParams:
    intermediate_grace: timedelta = timedelta(minutes=2)
    # The lot step assumed when a symbol has none in ``step_sizes`` (0: exact match).
    default_qty_tolerance: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class ReconAction:
    kind: ReconKind
    severity: Severity
    symbol: str
    reason: str
    db_position: DbPosition | None = None
    exchange_position: ExchangePosition | None = None
    quantity_from: Decimal | None = None
    quantity_to: Decimal | None = None


def reconcile(
    exchange: str,
    db_positions: Iterable[DbPosition],
    exchange_positions: Iterable[ExchangePosition],
    now: datetime,
    params: ReconParams | None = None,
    step_sizes: Mapping[str, Decimal] | None = None,
) -> tuple[ReconAction, ...]:
    """Diff one exchange's positions against the DB's. DB rows of other exchanges are ignored.

    ``db_positions`` may include terminal rows (recently closed ones make adoption wait);
    exchange positions with quantity 0 are treated as absent. ``step_sizes``: each symbol's
    lot step; quantities less than one step apart agree, one step apart is a mismatch
    (``orders.less_than_a_lot``).
    """
    now = require_aware(now)
    params = params or ReconParams()
    steps = step_sizes or {}
    open_db: dict[str, list[DbPosition]] = defaultdict(list)
    recently_closed: set[str] = set()
    for p in db_positions:
        if p.exchange != exchange:
            continue
        if p.status in TERMINAL:
            if now - p.updated_at < params.intermediate_grace:
                recently_closed.add(p.symbol)
        else:
            open_db[p.symbol].append(p)
    on_exchange: dict[str, list[ExchangePosition]] = defaultdict(list)
    for e in exchange_positions:
        if e.quantity > ZERO:
            on_exchange[e.symbol].append(e)

    actions: list[ReconAction] = []
    for symbol in sorted(set(open_db) | set(on_exchange)):
        tolerance = steps.get(symbol, params.default_qty_tolerance)
        actions.extend(
            _symbol(
                symbol,
                open_db.get(symbol, []),
                on_exchange.get(symbol, []),
                symbol in recently_closed,
                now,
                params,
                tolerance,
            )
        )
    return tuple(actions)


def _symbol(
    symbol: str,
    dbs: Sequence[DbPosition],
    exs: Sequence[ExchangePosition],
    recently_closed: bool,
    now: datetime,
    params: ReconParams,
    tolerance: Decimal,
) -> list[ReconAction]:
    if len(dbs) > 1:
        ids = ", ".join(str(p.id) for p in dbs)
        return [
            ReconAction(
                ReconKind.DUPLICATE_DB,
                Severity.CRITICAL,
                symbol,
                f"{len(dbs)} non-terminal DB positions ({ids}); resolve by hand",
            )
        ]
    db = dbs[0] if dbs else None
    if db is not None and db.status in RECON_INTERMEDIATE:
        return [_intermediate(db, exs, now, params)]
    if db is None:
        return [_missing(symbol, e, recently_closed) for e in exs]
    same_side = [e for e in exs if e.side is db.side]
    if not exs:
        return [
            ReconAction(
                ReconKind.CLOSE_PHANTOM,
                Severity.WARNING,
                symbol,
                f"DB {db.status.value} position {db.id} has no exchange position",
                db_position=db,
            )
        ]
    if not same_side:
        return [
            ReconAction(
                ReconKind.SIDE_MISMATCH,
                Severity.CRITICAL,
                symbol,
                f"DB {db.side.value} vs exchange {exs[0].side.value}",
                db_position=db,
                exchange_position=exs[0],
            )
        ]
    return _both_sides(symbol, db, exs, same_side[0], recently_closed, tolerance)


def _both_sides(
    symbol: str,
    db: DbPosition,
    exs: Sequence[ExchangePosition],
    ex: ExchangePosition,
    recently_closed: bool,
    tolerance: Decimal,
) -> list[ReconAction]:
    """The position is on both sides: its quantity, and a hedge-mode opposite slot."""
    result: list[ReconAction] = []
    if not less_than_a_lot(abs(ex.quantity - db.quantity), tolerance):
        result.append(
            ReconAction(
                ReconKind.CORRECT_QUANTITY,
                Severity.WARNING,
                symbol,
                f"quantity {db.quantity} in DB, {ex.quantity} on exchange",
                db_position=db,
                exchange_position=ex,
                quantity_from=db.quantity,
                quantity_to=ex.quantity,
            )
        )
    # Hedge mode: the opposite-side position has no DB row of its own.
    result.extend(_missing(symbol, e, recently_closed) for e in exs if e.side is not db.side)
    return result


def _intermediate(
    db: DbPosition, exs: Sequence[ExchangePosition], now: datetime, params: ReconParams
) -> ReconAction:
    """Within the grace its own path (opening, close) owns it; after it, recovery does."""
    age = now - db.updated_at
    seen = "exchange has a position" if exs else "exchange has none"
    if age < params.intermediate_grace:
        kind, severity = ReconKind.WAIT, Severity.INFO
        reason = f"{db.status.value} for {age}; its own path owns it ({seen})"
    else:
        kind, severity = ReconKind.RESOLVE_INTERMEDIATE, Severity.WARNING
        reason = f"{db.status.value} stuck for {age} ({seen}): hand to recovery"
    return ReconAction(
        kind,
        severity,
        db.symbol,
        reason,
        db_position=db,
        exchange_position=exs[0] if exs else None,
    )


def _missing(symbol: str, ex: ExchangePosition, recently_closed: bool) -> ReconAction:
    if recently_closed:
        return ReconAction(
            ReconKind.WAIT,
            Severity.INFO,
            symbol,
            "closed in DB moments ago; exchange snapshot may predate the close",
            exchange_position=ex,
        )
    return ReconAction(
        ReconKind.ADOPT_MISSING,
        Severity.WARNING,
        symbol,
        f"exchange {ex.side.value} {ex.quantity} has no DB position: adopt and protect",
        exchange_position=ex,
    )


# ---------------------------------------------------------------- exit price


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade (fill) of ours on the exchange."""

    id: str
    side: OrderSide
    price: Decimal
    quantity: Decimal
    timestamp: datetime


def exit_price_from_trades(
    trades: Iterable[Fill],
    side: Side,
    quantity: Decimal,
    since: datetime,
    tolerance: Decimal = ZERO,
) -> Decimal | None:
    """VWAP of the fills that closed a position of ``side`` and ``quantity``, or None.

    Closing fills are on the position's closing side at or after ``since`` (the position's
    open). The newest fills are consumed first up to ``quantity`` (the last one partially),
    so earlier partial reductions already reflected in ``quantity`` are not counted. Fills
    are de-duplicated by id. If the fills found cover less than ``quantity - tolerance``
    the evidence is incomplete and the answer is None: a guessed exit price must never be
    recorded as the real one.
    """
    if not quantity > ZERO:
        return None
    since = require_aware(since, "since")
    unique: dict[str, Fill] = {}
    for t in trades:
        if t.side is side.close_order_side and t.timestamp >= since and t.quantity > ZERO:
            unique.setdefault(t.id, t)
    remaining = quantity
    cost = ZERO
    for t in sorted(unique.values(), key=lambda f: (f.timestamp, f.id), reverse=True):
        if remaining <= ZERO:
            break
        take = min(t.quantity, remaining)
        cost += take * t.price
        remaining -= take
    filled = quantity - remaining
    if filled <= ZERO or filled < quantity - tolerance:
        return None
    return cost / filled
