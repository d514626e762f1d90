"""Signal waves: grouping by time window, ranking, filtering, and the open-until-N rule.

Why waves: the signal service emits bursts; opening each signal as it arrives would take
the first N, not the best N. Signals are grouped into fixed windows, and when a window's
deadline passes the wave is ranked and filtered once (the service stores that the wave is
processed, so a re-delivery does nothing).

Definitions:

- wave key = (exchange, window start) where ``start = floor(timestamp / window)`` in UTC
  epoch seconds; ``deadline = start + window + grace`` (the grace lets late frames of the
  window arrive). A signal received after its wave's deadline is *late* (``is_late``).
- rank: ``score_week`` desc, then ``score_month`` desc, then ``id`` asc (deterministic).
- filters, each with a reason, in this order: min score week, min score month, stoplist,
  already open on that exchange (any non-terminal status, including intermediate ones),
  duplicate symbol in the wave (keep the best ranked; a BUY and a SELL for one symbol in
  one wave are duplicates too: the best ranked wins);
- capacity: ``target = min(max_trades_per_wave, free slots, exposure room, balance room)``
  where one position costs ``position_size_quote`` of exposure and
  ``position_size_quote / leverage`` of margin. The service may open up to
  ``target + buffer`` candidates, in order, and stops as soon as ``target`` succeeded, so
  capacity can never be exceeded. Eligible signals past that list are filtered with the
  binding reason (max open positions / max exposure / insufficient balance, or
  ``beyond_wave_limit`` when N itself bound).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from core.domain.positions import TERMINAL, PositionStatus
from core.domain.signals import Exchange, Signal
from core.domain.timeutil import require_aware

ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WaveParams:
    window: timedelta = timedelta(seconds=900)
    grace: timedelta = timedelta(seconds=60)
    min_score_week: Decimal = ZERO
    min_score_month: Decimal = ZERO
    stoplist: frozenset[str] = frozenset()
    max_trades_per_wave: int = 5
    buffer: int = 3
    max_open_positions: int = 10
    max_exposure_quote: Decimal | None = None
    position_size_quote: Decimal = Decimal(100)
    leverage: Decimal = Decimal(1)
    balance_reserve_quote: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.grace < timedelta(0):
            raise ValueError("window must be > 0 and grace >= 0")
        if self.max_trades_per_wave < 0 or self.buffer < 0 or self.max_open_positions < 0:
            raise ValueError("counts must be >= 0")
        if not (self.position_size_quote > ZERO and self.leverage > ZERO):
            raise ValueError("position_size_quote and leverage must be > 0")


@dataclass(frozen=True, slots=True, order=True)
class WaveKey:
    exchange: Exchange
    start: datetime

    @property
    def id(self) -> str:
        """Stable id for the processed-once record, e.g. ``binance:2026-11-23T12:00:00Z``."""
        return f"{self.exchange.value}:{self.start.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def wave_key(signal: Signal, params: WaveParams) -> WaveKey:
    ts = require_aware(signal.timestamp, "timestamp")
    window_us = params.window // timedelta(microseconds=1)
    offset_us = (ts - _EPOCH) // timedelta(microseconds=1)
    start = _EPOCH + timedelta(microseconds=(offset_us // window_us) * window_us)
    return WaveKey(signal.exchange, start)


def wave_deadline(key: WaveKey, params: WaveParams) -> datetime:
    return key.start + params.window + params.grace


def wave_is_due(key: WaveKey, now: datetime, params: WaveParams) -> bool:
    """The wave may be processed: its deadline has passed (at the deadline counts)."""
    return require_aware(now) >= wave_deadline(key, params)


def is_late(signal: Signal, received_at: datetime, params: WaveParams) -> bool:
    """Received after its wave's deadline: the wave may already be processed."""
    return require_aware(received_at, "received_at") > wave_deadline(
        wave_key(signal, params), params
    )


def group_into_waves(
    signals: Iterable[Signal], params: WaveParams
) -> dict[WaveKey, tuple[Signal, ...]]:
    """Signals grouped by wave key (keys and members in deterministic order)."""
    groups: dict[WaveKey, list[Signal]] = defaultdict(list)
    for s in signals:
        groups[wave_key(s, params)].append(s)
    return {k: tuple(sorted(groups[k], key=rank_key)) for k in sorted(groups)}


def rank_key(signal: Signal) -> tuple[Decimal, Decimal, str]:
    """Sort key: best first (score_week desc, score_month desc, id asc)."""
    return (-signal.score_week, -signal.score_month, signal.id)


class FilterReason(StrEnum):
    BELOW_MIN_SCORE_WEEK = "below_min_score_week"
    BELOW_MIN_SCORE_MONTH = "below_min_score_month"
    STOPLISTED = "stoplisted"
    ALREADY_OPEN = "already_open"
    DUPLICATE_IN_WAVE = "duplicate_in_wave"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_EXPOSURE = "max_exposure"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    BEYOND_WAVE_LIMIT = "beyond_wave_limit"


@dataclass(frozen=True, slots=True)
class OpenPositionInfo:
    exchange: str
    symbol: str
    status: PositionStatus
    notional_quote: Decimal


@dataclass(frozen=True, slots=True)
class WaveContext:
    """The account as the wave sees it: non-terminal positions and free balance (quote)."""

    open_positions: Sequence[OpenPositionInfo]
    available_balance: Decimal


@dataclass(frozen=True, slots=True)
class Filtered:
    signal: Signal
    reason: FilterReason
    detail: str


@dataclass(frozen=True, slots=True)
class WaveSelection:
    """``to_open`` in order (``target`` of them should succeed); every other signal is in
    ``filtered`` with its reason."""

    to_open: tuple[Signal, ...]
    target: int
    filtered: tuple[Filtered, ...]


def select_wave(
    candidates: Iterable[Signal], context: WaveContext, params: WaveParams
) -> WaveSelection:
    """Rank, filter and cut one wave's signals (see module doc for the rules)."""
    open_now = [p for p in context.open_positions if p.status not in TERMINAL]
    open_keys = {(p.exchange, p.symbol) for p in open_now}
    filtered: list[Filtered] = []
    eligible: list[Signal] = []
    seen_symbols: dict[tuple[str, str], str] = {}
    for s in sorted(candidates, key=rank_key):
        reason = _static_filter(s, open_keys, params)
        if reason is not None:
            filtered.append(Filtered(s, *reason))
            continue
        key = (s.exchange.value, s.symbol)
        if key in seen_symbols:
            filtered.append(
                Filtered(s, FilterReason.DUPLICATE_IN_WAVE, f"ranked below {seen_symbols[key]}")
            )
            continue
        seen_symbols[key] = s.id
        eligible.append(s)

    target, binding = _capacity(open_now, context.available_balance, params)
    take = target + params.buffer if target > 0 else 0
    to_open = tuple(eligible[:take])
    for s in eligible[take:]:
        filtered.append(Filtered(s, binding[0], binding[1]))
    return WaveSelection(to_open, target, tuple(filtered))


def _static_filter(
    s: Signal, open_keys: set[tuple[str, str]], params: WaveParams
) -> tuple[FilterReason, str] | None:
    if s.score_week < params.min_score_week:
        return FilterReason.BELOW_MIN_SCORE_WEEK, f"{s.score_week} < {params.min_score_week}"
    if s.score_month < params.min_score_month:
        return FilterReason.BELOW_MIN_SCORE_MONTH, f"{s.score_month} < {params.min_score_month}"
    if s.symbol in params.stoplist:
        return FilterReason.STOPLISTED, s.symbol
    if (s.exchange.value, s.symbol) in open_keys:
        return FilterReason.ALREADY_OPEN, f"{s.symbol} has a non-terminal position"
    return None


def _capacity(
    open_now: Sequence[OpenPositionInfo], balance: Decimal, params: WaveParams
) -> tuple[int, tuple[FilterReason, str]]:
    """How many positions may open, and the reason that binds beyond it."""
    limits: list[tuple[int, FilterReason, str]] = [
        (params.max_trades_per_wave, FilterReason.BEYOND_WAVE_LIMIT, "top N + buffer taken")
    ]
    slots = max(params.max_open_positions - len(open_now), 0)
    limits.append(
        (slots, FilterReason.MAX_OPEN_POSITIONS, f"{len(open_now)}/{params.max_open_positions}")
    )
    size = params.position_size_quote
    if params.max_exposure_quote is not None:
        exposure = sum((p.notional_quote for p in open_now), ZERO)
        room = max(params.max_exposure_quote - exposure, ZERO)
        limits.append(
            (int(room // size), FilterReason.MAX_EXPOSURE, f"exposure {exposure} + {size} each")
        )
    margin = size / params.leverage
    free = max(balance - params.balance_reserve_quote, ZERO)
    limits.append(
        (int(free // margin), FilterReason.INSUFFICIENT_BALANCE, f"free {free}, {margin} each")
    )
    # Stable min: the first listed limit wins ties (N, then positions, exposure, balance).
    count, reason, detail = min(limits, key=lambda lim: lim[0])
    return count, (reason, detail)


class OpenOutcome(StrEnum):
    OPENED = "opened"
    FAILED = "failed"  # this symbol failed (permanent for it, e.g. below minimum); try next
    FAILED_FATAL = "failed_fatal"  # the account cannot open anything (e.g. insufficient funds)


@dataclass(frozen=True, slots=True)
class ContinueDecision:
    proceed: bool
    next_index: int | None
    opened: int
    reason: str


def next_to_open(selection: WaveSelection, outcomes: Sequence[OpenOutcome]) -> ContinueDecision:
    """Given the outcomes of ``to_open[0:len(outcomes)]`` so far, whether to open the next."""
    opened = sum(1 for o in outcomes if o is OpenOutcome.OPENED)
    if opened >= selection.target:
        return ContinueDecision(False, None, opened, f"target {selection.target} reached")
    if outcomes and outcomes[-1] is OpenOutcome.FAILED_FATAL:
        return ContinueDecision(False, None, opened, "fatal failure: stop the wave")
    index = len(outcomes)
    if index >= len(selection.to_open):
        return ContinueDecision(
            False, None, opened, f"candidates exhausted with {opened}/{selection.target}"
        )
    return ContinueDecision(True, index, opened, f"{opened}/{selection.target} opened")
