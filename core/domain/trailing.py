"""Smart trailing stop: the pure decision and the price band in which it cannot act.

Why it is shaped this way (seeds/000, seeds/001 §3):

- The old bot kept trailing state in memory and cancelled the old stop before placing the
  new one. Here the state is a frozen value the service persists *after* the exchange
  accepted the new stop (make before break is the service's job), so a restart resumes.
- The decision sees a *coalesced* price window (high/low since the last decision, and the
  last price), because the ingest coalesces bursts into one task per symbol. It therefore
  depends only on (high, low, last), never on tick order inside the window.
- Every stop it asks for is strictly tighter than the live one (never loosens), on the
  valid side of the last price by ``min_distance_pct`` (a stop the exchange would reject as
  "would trigger immediately" is clamped to that distance), on the tick grid rounded away
  from the price, and at least ``min_step_pct`` away from the live stop.
- Updates are rate-limited per position (= per symbol): a move that falls inside the
  interval is *deferred*, not lost. The desired stop is always recomputed from the durable
  extremes, so the next decision after ``retry_at`` sends it even if no new tick came; the
  service schedules that decision at ``retry_at``.

Definitions (long; short mirrors):

- activation price ``A = entry * (1 + activation_pct/100)``; activation when the highest
  price seen is ``>= A`` (exactly at the threshold activates).
- trailing candidate ``highest * (1 - callback_pct/100)`` once activated.
- breakeven (optional): once the highest price reaches ``entry * (1 + breakeven_at_pct/100)``
  the breakeven level ``entry * (1 + 2 * taker_fee_pct/100)`` (entry plus a round trip of
  taker fees) becomes a candidate, before activation. Sticky: once triggered it stays.
- time-based activation (optional): once the position is ``time_activation_after`` old and
  the *last* price is in profit by more than ``time_activation_min_profit_pct``.
- the target is the tightest candidate, clamped to ``last * (1 - min_distance_pct/100)``,
  rounded down to the tick. It is sent when ``target > stop`` and
  ``target - stop >= stop * min_step_pct/100``.

Ownership: trailing places or moves a stop only while it owns the position's stop (a
durable flag flipped under the symbol lock, see ``protection``); this module decides *what*
stop, the service checks ownership before acting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from core.domain.bands import PriceBand
from core.domain.numbers import HUNDRED, ONE, TWO, ZERO
from core.domain.sides import Side, price_against, price_in_favour
from core.domain.sizing import Rounding, round_price, round_stop_price
from core.domain.timeutil import require_aware

# Bands are narrowed by this relative slack so that 28-digit Decimal rounding inside the
# decision can never make a price strictly inside the band act.
BAND_SLACK = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class TrailingParams:
    """Trailing-stop settings (SPEC §4 defaults); percentages are in percent (1.5 = 1.5 %)."""

    activation_pct: Decimal = Decimal("1.5")
    callback_pct: Decimal = Decimal("0.5")
    breakeven_at_pct: Decimal | None = None
    taker_fee_pct: Decimal = Decimal("0.05")
    time_activation_after: timedelta | None = None
    time_activation_min_profit_pct: Decimal = ZERO
    min_step_pct: Decimal = Decimal("0.1")
    min_update_interval: timedelta = timedelta(seconds=5)
    min_distance_pct: Decimal = Decimal("0.1")

    def __post_init__(self) -> None:
        if not ZERO < self.callback_pct < HUNDRED:
            raise ValueError("callback_pct must be in (0, 100)")
        if not ZERO < self.min_distance_pct < HUNDRED:
            raise ValueError("min_distance_pct must be in (0, 100)")
        if self.activation_pct < ZERO or self.min_step_pct < ZERO or self.taker_fee_pct < ZERO:
            raise ValueError("activation_pct, min_step_pct, taker_fee_pct must be >= 0")
        if self.breakeven_at_pct is not None and self.breakeven_at_pct < ZERO:
            raise ValueError("breakeven_at_pct must be >= 0")
        if self.min_update_interval < timedelta(0):
            raise ValueError("min_update_interval must be >= 0")


@dataclass(frozen=True, slots=True)
class TrailingState:
    """Durable per-position trailing state (one row per position).

    ``stop_price`` is the stop live on the exchange as far as the engine knows (the service
    persists a new value only after the exchange accepted it). ``pending_stop`` is a move
    the rate limit deferred (informational: the next decision recomputes it).
    """

    side: Side
    entry_price: Decimal
    quantity: Decimal
    opened_at: datetime
    activation_price: Decimal
    highest_price: Decimal
    lowest_price: Decimal
    stop_price: Decimal | None
    activated: bool = False
    activated_at: datetime | None = None
    breakeven_triggered: bool = False
    update_count: int = 0
    last_update_at: datetime | None = None
    pending_stop: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceWindow:
    """Prices seen since the last decision: ``low <= last <= high``, all positive."""

    high: Decimal
    low: Decimal
    last: Decimal

    def __post_init__(self) -> None:
        if not (ZERO < self.low <= self.last <= self.high):
            raise ValueError(f"bad window low={self.low} last={self.last} high={self.high}")

    @classmethod
    def at(cls, price: Decimal) -> PriceWindow:
        return cls(price, price, price)

    @classmethod
    def of(cls, ticks: list[Decimal]) -> PriceWindow:
        """Coalesce a non-empty tick sequence."""
        return cls(max(ticks), min(ticks), ticks[-1])


class TrailingAction(StrEnum):
    NONE = "none"
    ACTIVATE = "activate"
    BREAKEVEN = "breakeven"
    MOVE_STOP = "move_stop"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class TrailingDecision:
    """What to do, and the state to persist once done.

    ``action`` is the primary event; ``events`` lists every event of this decision in
    order (e.g. ``(ACTIVATE, BREAKEVEN)``) for the event log. When ``new_stop`` is set the
    service places it (then cancels ``old_stop``) and persists ``state`` only on success.
    When ``retry_at`` is set a move was deferred by the rate limit: schedule a decision then.
    """

    action: TrailingAction
    events: tuple[TrailingAction, ...]
    state: TrailingState
    old_stop: Decimal | None
    new_stop: Decimal | None
    retry_at: datetime | None
    reason: str

    @property
    def send(self) -> bool:
        return self.new_stop is not None


def activation_price(side: Side, entry_price: Decimal, activation_pct: Decimal) -> Decimal:
    """Where trailing activates: ``activation_pct`` % from the entry, on the profit side."""
    return price_in_favour(entry_price, activation_pct, side)


def new_trailing_state(
    side: Side,
    entry_price: Decimal,
    quantity: Decimal,
    opened_at: datetime,
    stop_price: Decimal | None,
    params: TrailingParams,
) -> TrailingState:
    """Initial state for a freshly opened (or adopted) position."""
    if not (entry_price > ZERO and quantity > ZERO):
        raise ValueError("entry_price and quantity must be positive")
    activation = activation_price(side, entry_price, params.activation_pct)
    return TrailingState(
        side=side,
        entry_price=entry_price,
        quantity=quantity,
        opened_at=require_aware(opened_at, "opened_at"),
        activation_price=activation,
        highest_price=entry_price,
        lowest_price=entry_price,
        stop_price=stop_price,
    )


# ---------------------------------------------------------------- helpers (side-aware)


def _is_long(state: TrailingState) -> bool:
    return state.side is Side.LONG


def _favourable_extreme(state: TrailingState) -> Decimal:
    return state.highest_price if _is_long(state) else state.lowest_price


def _trail_candidate(state: TrailingState, extreme: Decimal, params: TrailingParams) -> Decimal:
    return price_against(extreme, params.callback_pct, state.side)


def breakeven_level(state: TrailingState, params: TrailingParams) -> Decimal:
    """Entry plus two taker fees in the position's favour."""
    return price_in_favour(state.entry_price, TWO * params.taker_fee_pct, state.side)


def breakeven_trigger_price(state: TrailingState, params: TrailingParams) -> Decimal | None:
    if params.breakeven_at_pct is None:
        return None
    return price_in_favour(state.entry_price, params.breakeven_at_pct, state.side)


def _time_profit_price(state: TrailingState, params: TrailingParams) -> Decimal:
    return price_in_favour(state.entry_price, params.time_activation_min_profit_pct, state.side)


def _reached(state: TrailingState, extreme: Decimal, level: Decimal) -> bool:
    return extreme >= level if _is_long(state) else extreme <= level


def _tightest(state: TrailingState, values: list[Decimal]) -> Decimal:
    return max(values) if _is_long(state) else min(values)


def _clamp_limit(state: TrailingState, last: Decimal, params: TrailingParams) -> Decimal:
    return price_against(last, params.min_distance_pct, state.side)


def _step_abs(stop: Decimal, params: TrailingParams) -> Decimal:
    return abs(stop) * params.min_step_pct / HUNDRED


def _qualifies(state: TrailingState, target: Decimal, params: TrailingParams) -> bool:
    """Tighter than the live stop by at least the minimum step."""
    stop = state.stop_price
    if stop is None:
        return True
    gain = target - stop if _is_long(state) else stop - target
    return gain > ZERO and gain >= _step_abs(stop, params)


def _time_eligible_at(state: TrailingState, params: TrailingParams) -> datetime | None:
    if params.time_activation_after is None:
        return None
    return state.opened_at + params.time_activation_after


def _retry_at(state: TrailingState, params: TrailingParams) -> datetime | None:
    if state.last_update_at is None:
        return None
    return state.last_update_at + params.min_update_interval


# ---------------------------------------------------------------- decision


def decide(
    state: TrailingState,
    window: PriceWindow,
    now: datetime,
    params: TrailingParams,
    tick_size: Decimal | None = None,
) -> TrailingDecision:
    """Advance the trailing state by one coalesced price window at ``now``."""
    now = require_aware(now)
    st = replace(
        state,
        highest_price=max(state.highest_price, window.high),
        lowest_price=min(state.lowest_price, window.low),
    )
    st, events, reasons = _events(st, window, now, params)
    target = _target(st, window, params, tick_size, reasons)
    old_stop = state.stop_price

    if target is None:
        st = replace(st, pending_stop=None)
        primary = events[0] if events else TrailingAction.NONE
        reason = "; ".join(reasons) or "no change"
        return TrailingDecision(primary, tuple(events), st, old_stop, None, None, reason)

    retry_at = _retry_at(state, params)
    if retry_at is not None and now < retry_at:
        if target != state.pending_stop:
            events.append(TrailingAction.DEFERRED)
        st = replace(st, pending_stop=target)
        reasons.append(f"stop {target} deferred by rate limit until {retry_at.isoformat()}")
        primary = events[0] if events else TrailingAction.NONE
        return TrailingDecision(
            primary, tuple(events), st, old_stop, None, retry_at, "; ".join(reasons)
        )

    st = replace(
        st,
        stop_price=target,
        pending_stop=None,
        update_count=st.update_count + 1,
        last_update_at=now,
    )
    if not events:
        events.append(TrailingAction.MOVE_STOP)
    reasons.append(f"stop {old_stop} -> {target}")
    return TrailingDecision(
        events[0], tuple(events), st, old_stop, target, None, "; ".join(reasons)
    )


def _events(
    st: TrailingState, window: PriceWindow, now: datetime, params: TrailingParams
) -> tuple[TrailingState, list[TrailingAction], list[str]]:
    """Activation (by price, else by time) and breakeven triggering."""
    extreme = _favourable_extreme(st)
    events: list[TrailingAction] = []
    reasons: list[str] = []
    if not st.activated:
        eligible_at = _time_eligible_at(st, params)
        if _reached(st, extreme, st.activation_price):
            st = replace(st, activated=True, activated_at=now)
            events.append(TrailingAction.ACTIVATE)
            reasons.append(f"price reached activation {st.activation_price}")
        elif eligible_at is not None and now >= eligible_at:
            profit_price = _time_profit_price(st, params)
            if _is_long(st):
                in_profit = window.last > profit_price
            else:
                in_profit = window.last < profit_price
            if in_profit:
                st = replace(st, activated=True, activated_at=now)
                events.append(TrailingAction.ACTIVATE)
                reasons.append("time-based activation: old enough and in profit")
    trigger = breakeven_trigger_price(st, params)
    if trigger is not None and not st.breakeven_triggered and _reached(st, extreme, trigger):
        st = replace(st, breakeven_triggered=True)
        events.append(TrailingAction.BREAKEVEN)
        reasons.append(f"profit reached breakeven trigger {trigger}")
    return st, events, reasons


def _target(
    st: TrailingState,
    window: PriceWindow,
    params: TrailingParams,
    tick_size: Decimal | None,
    reasons: list[str],
) -> Decimal | None:
    """The stop to send (clamped, rounded, qualified), or None when nothing is worth sending."""
    candidates: list[Decimal] = []
    if st.activated:
        candidates.append(_trail_candidate(st, _favourable_extreme(st), params))
    if st.breakeven_triggered:
        candidates.append(breakeven_level(st, params))
    if not candidates:
        return None
    wanted = _tightest(st, candidates)
    limit = _clamp_limit(st, window.last, params)
    clamped = min(wanted, limit) if _is_long(st) else max(wanted, limit)
    if clamped != wanted:
        reasons.append(f"clamped to {params.min_distance_pct}% from last {window.last}")
    target = round_stop_price(clamped, tick_size, st.side) if tick_size else clamped
    if target <= ZERO or not _qualifies(st, target, params):
        return None
    return target


# ---------------------------------------------------------------- band


def band(
    state: TrailingState,
    params: TrailingParams,
    now: datetime,
    tick_size: Decimal | None = None,
) -> PriceBand:
    """Prices ``p`` for which ``decide(state, PriceWindow.at(p), now)`` is NONE.

    Open interval; ``valid_until`` marks when time alone can change the decision
    (time-based activation becoming eligible, a deferred move falling due).
    ``tick_size``: pass the one ``decide`` gets. Without it the band stays valid (rounding a
    stop away from the price only makes moves rarer) but can be far narrower than the
    no-op region: a candidate that reaches the next step only before rounding would make
    every tick above the clamp threshold wake the price task for nothing, until a new
    extreme. With it the move threshold is exact on the tick grid.
    """
    now = require_aware(now)
    long = _is_long(state)
    retry_at = _retry_at(state, params)
    valid_until: datetime | None = None
    if state.pending_stop is not None and retry_at is not None:
        if now >= retry_at:
            return PriceBand.empty()
        valid_until = retry_at

    # Prices at or beyond which something may happen, on the favourable side.
    thresholds: list[Decimal] = []
    if not state.activated:
        thresholds.append(state.activation_price)
        eligible_at = _time_eligible_at(state, params)
        if eligible_at is not None:
            if now >= eligible_at:
                thresholds.append(_time_profit_price(state, params))
            else:
                valid_until = eligible_at if valid_until is None else min(valid_until, eligible_at)
    trigger = breakeven_trigger_price(state, params)
    if trigger is not None and not state.breakeven_triggered:
        thresholds.append(trigger)
    move = _move_threshold(state, params, tick_size)
    if move is _ALWAYS:
        return PriceBand.empty(valid_until)
    if isinstance(move, Decimal):
        thresholds.append(move)

    if not thresholds:
        return PriceBand.unbounded(valid_until)
    if long:
        return PriceBand(None, min(thresholds) * (ONE - BAND_SLACK), valid_until)
    return PriceBand(max(thresholds) * (ONE + BAND_SLACK), None, valid_until)


class _Always:
    pass


_ALWAYS = _Always()


def _move_threshold(
    state: TrailingState, params: TrailingParams, tick_size: Decimal | None = None
) -> Decimal | _Always | None:
    """The price from which a stop move may qualify; None: no move possible by price alone.

    long: ``target(p) = round_down(min(max(trail(max(H, p)), BE), p * (1 - md)))`` must
    reach ``S' = stop + step`` (strictly above ``stop`` when the step is 0); both terms are
    non-decreasing in p, so the threshold is the max of each term's own threshold (short
    mirrors with min/max swapped). On a tick grid, ``round_down(x) >= S'`` exactly when
    ``x >= ceil(S')``, so the goal is taken on the grid first.
    """
    if not (state.activated or state.breakeven_triggered):
        return None
    if state.stop_price is None:
        return _ALWAYS
    long = _is_long(state)
    goal, strict = _goal(state, params, tick_size)
    if goal <= ZERO:
        # long: any positive target qualifies; short: no positive target can.
        return _ALWAYS if long else None
    cb = params.callback_pct / HUNDRED
    md = params.min_distance_pct / HUNDRED

    def reaches(value: Decimal) -> bool:
        if long:
            return value > goal if strict else value >= goal
        return value < goal if strict else value <= goal

    be_ok = state.breakeven_triggered and reaches(breakeven_level(state, params))
    extreme = _favourable_extreme(state)
    trail_ok = state.activated and reaches(_trail_candidate(state, extreme, params))
    # Threshold of the candidate term (None: already satisfied at any price).
    cand: Decimal | None
    if be_ok or trail_ok:
        cand = None
    elif state.activated:
        cand = goal / (ONE - cb) if long else goal / (ONE + cb)
    else:
        return None  # only the breakeven level, and it is not tight enough: no move
    clamp = goal / (ONE - md) if long else goal / (ONE + md)
    if cand is None:
        return clamp
    return max(cand, clamp) if long else min(cand, clamp)


def _goal(
    state: TrailingState, params: TrailingParams, tick_size: Decimal | None
) -> tuple[Decimal, bool]:
    """The stop a move must reach, and whether reaching means passing (``_qualifies``)."""
    assert state.stop_price is not None
    long = _is_long(state)
    stop = state.stop_price
    step = _step_abs(stop, params)
    if tick_size is None:
        return (stop + step if long else stop - step), step == ZERO
    if step > ZERO:
        goal = stop + step if long else stop - step
        return round_price(goal, tick_size, Rounding.UP if long else Rounding.DOWN), False
    # no minimum step: the next grid price strictly beyond the stop
    if long:
        return round_price(stop, tick_size, Rounding.DOWN) + tick_size, False
    return round_price(stop, tick_size, Rounding.UP) - tick_size, False
