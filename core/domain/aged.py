"""Aged positions: phases, close targets and the close band (seeds/002).

Why: a position that neither hit its stop nor started trailing ties up margin and risk
indefinitely. The old bot parked LIMIT orders at a target (blocking the position, never
guaranteed to fill); here the target is a *price level* the price path watches, and the
close is a reduce-only MARKET order fired when the mark price reaches it.

Definitions (every threshold is a parameter; defaults from seeds/002):

- ``aged_since = opened_at + max_age`` (3 h). Using the open time, not the moment a job
  noticed it, makes the phases deterministic and restart-proof.
- A position with an active trailing stop is never aged (trailing owns its exit).
- Comparisons follow seeds/002, where every boundary belongs to the *earlier* (more
  patient) phase: aged when ``age > max_age``; grace while ``hours_aged <= grace`` (8 h);
  acceleration when ``hours_after_grace > acceleration_after`` (10 h); emergency when the
  accepted loss ``> max_loss_pct`` (10 %).
- GRACE: target = breakeven plus two taker commissions: long ``entry * (1 + 2 * fee)``,
  short ``entry * (1 - 2 * fee)``.
- PROGRESSIVE: accepted loss ``L = hours_after_grace * loss_step_pct_per_hour`` (0.5 %/h),
  and once ``hours_after_grace > acceleration_after`` the *whole* ``L`` is multiplied by
  ``acceleration_factor`` (1.2), exactly as seeds/002 computes it (``loss_percent *= 1.2``;
  the accepted loss jumps from 5 % to 6 % at 10 h after grace, it never decreases). The
  target is ``entry * (1 - L/100)`` (long) / ``entry * (1 + L/100)`` (short), relative to
  the entry price.
- EMERGENCY: ``L > max_loss_pct``: close at market now. With the defaults this starts
  16 h 40 min after grace, i.e. 27 h 40 min after the open (seeds/002: "> 28 h").
- In profit (any aged phase): the mark is at or beyond the grace target, i.e. profitable
  *net of the round-trip fees*; close now. (Gross profit would make the grace target
  pointless: every price above entry would close before reaching it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from core.domain.bands import PriceBand
from core.domain.numbers import HUNDRED, ONE, TWO, ZERO
from core.domain.sides import Side, price_against, price_in_favour
from core.domain.timeutil import hours, require_aware


class AgedPhase(StrEnum):
    NOT_AGED = "not_aged"
    GRACE = "grace"
    PROGRESSIVE = "progressive"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    AgedPhase.NOT_AGED: 0,
    AgedPhase.GRACE: 1,
    AgedPhase.PROGRESSIVE: 2,
    AgedPhase.EMERGENCY: 3,
}


class AgedCloseReason(StrEnum):
    PROFIT = "profit"
    TARGET_REACHED = "target_reached"
    MAX_LOSS_EXCEEDED = "max_loss_exceeded"


@dataclass(frozen=True, slots=True)
class AgedParams:
    max_age: timedelta = timedelta(hours=3)
    grace_period: timedelta = timedelta(hours=8)
    loss_step_pct_per_hour: Decimal = Decimal("0.5")
    acceleration_factor: Decimal = Decimal("1.2")
    acceleration_after: timedelta = timedelta(hours=10)
    max_loss_pct: Decimal = Decimal(10)
    taker_fee_pct: Decimal = Decimal("0.05")

    def __post_init__(self) -> None:
        if self.max_age < timedelta(0) or self.grace_period < timedelta(0):
            raise ValueError("max_age and grace_period must be >= 0")
        if self.acceleration_after < timedelta(0):
            raise ValueError("acceleration_after must be >= 0")
        if not self.loss_step_pct_per_hour > ZERO:
            raise ValueError("loss_step_pct_per_hour must be > 0")
        if self.acceleration_factor < ONE:
            raise ValueError("acceleration_factor must be >= 1 (loss never decreases)")
        if not ZERO < self.max_loss_pct < HUNDRED:
            raise ValueError("max_loss_pct must be in (0, 100)")
        if self.taker_fee_pct < ZERO:
            raise ValueError("taker_fee_pct must be >= 0")


@dataclass(frozen=True, slots=True)
class AgedPosition:
    """What the aged decision needs to know about a position."""

    side: Side
    entry_price: Decimal
    opened_at: datetime
    trailing_active: bool = False


@dataclass(frozen=True, slots=True)
class AgedTransition:
    from_phase: AgedPhase
    to_phase: AgedPhase
    reason: str


@dataclass(frozen=True, slots=True)
class AgedDecision:
    """The phase now, its close target, and whether to close at market now.

    ``transition`` is set when the phase differs from the stored one (store it with the
    event). ``accepted_loss_pct`` is the uncapped progressive loss (0 before progressive).
    ``target_price`` is None when not aged or in emergency (close at market regardless).
    """

    phase: AgedPhase
    aged_since: datetime
    hours_aged: Decimal
    accepted_loss_pct: Decimal
    target_price: Decimal | None
    close_now: bool
    close_reason: AgedCloseReason | None
    transition: AgedTransition | None
    reason: str


def aged_since(position: AgedPosition, params: AgedParams) -> datetime:
    return require_aware(position.opened_at, "opened_at") + params.max_age


def breakeven_target(position: AgedPosition, params: AgedParams) -> Decimal:
    """Entry plus two taker commissions, in the holder's favour (the grace target)."""
    return price_in_favour(position.entry_price, TWO * params.taker_fee_pct, position.side)


def accepted_loss_pct(hours_after_grace: Decimal, params: AgedParams) -> Decimal:
    """Uncapped accepted loss in percent after ``hours_after_grace`` of progressive phase."""
    if hours_after_grace <= ZERO:
        return ZERO
    loss = hours_after_grace * params.loss_step_pct_per_hour
    if hours_after_grace > hours(params.acceleration_after):
        loss *= params.acceleration_factor
    return loss


def loss_target(position: AgedPosition, loss_pct: Decimal) -> Decimal:
    """The price at which the holder loses ``loss_pct`` % of entry."""
    return price_against(position.entry_price, loss_pct, position.side)


def phase_at(
    position: AgedPosition, now: datetime, params: AgedParams
) -> tuple[AgedPhase, Decimal]:
    """(phase, uncapped accepted loss %) at ``now``, before looking at the price."""
    now = require_aware(now)
    if position.trailing_active:
        return AgedPhase.NOT_AGED, ZERO
    h = hours(now - aged_since(position, params))
    if h <= ZERO:
        return AgedPhase.NOT_AGED, ZERO
    grace_h = hours(params.grace_period)
    if h <= grace_h:
        return AgedPhase.GRACE, ZERO
    loss = accepted_loss_pct(h - grace_h, params)
    if loss > params.max_loss_pct:
        return AgedPhase.EMERGENCY, loss
    return AgedPhase.PROGRESSIVE, loss


def _target(
    position: AgedPosition, phase: AgedPhase, loss: Decimal, params: AgedParams
) -> Decimal | None:
    if phase is AgedPhase.GRACE:
        return breakeven_target(position, params)
    if phase is AgedPhase.PROGRESSIVE:
        return loss_target(position, loss)
    return None


def _reached(position: AgedPosition, mark: Decimal, level: Decimal) -> bool:
    return mark >= level if position.side is Side.LONG else mark <= level


def evaluate(
    position: AgedPosition,
    stored_phase: AgedPhase | None,
    mark_price: Decimal | None,
    now: datetime,
    params: AgedParams,
) -> AgedDecision:
    """Phase, target and close decision at ``now`` for the given mark price.

    ``stored_phase``: the phase persisted by the last evaluation (None: no aged row yet,
    treated as NOT_AGED). ``mark_price`` None (no price yet) never closes except in
    emergency, which closes at market whatever the price.
    """
    now = require_aware(now)
    since = aged_since(position, params)
    phase, loss = phase_at(position, now, params)
    target = _target(position, phase, loss, params)
    h = max(hours(now - since), ZERO)
    close_reason: AgedCloseReason | None = None
    if phase is AgedPhase.EMERGENCY:
        close_reason = AgedCloseReason.MAX_LOSS_EXCEEDED
        reason = f"accepted loss {loss:.4f}% exceeds max {params.max_loss_pct}%: close at market"
    elif phase is AgedPhase.NOT_AGED:
        reason = "trailing stop active" if position.trailing_active else "not aged yet"
    elif mark_price is not None and _reached(
        position, mark_price, breakeven_target(position, params)
    ):
        close_reason = AgedCloseReason.PROFIT
        reason = f"in profit net of fees at mark {mark_price}: close now"
    elif mark_price is not None and target is not None and _reached(position, mark_price, target):
        close_reason = AgedCloseReason.TARGET_REACHED
        reason = f"mark {mark_price} reached {phase.value} target {target}"
    else:
        reason = f"{phase.value}: waiting for target {target}"
    previous = stored_phase or AgedPhase.NOT_AGED
    transition = None
    if previous is not phase:
        transition = AgedTransition(previous, phase, f"{h:.4f} h after becoming aged")
    return AgedDecision(
        phase=phase,
        aged_since=since,
        hours_aged=h,
        accepted_loss_pct=loss,
        target_price=target,
        close_now=close_reason is not None,
        close_reason=close_reason,
        transition=transition,
        reason=reason,
    )


def emergency_at(position: AgedPosition, params: AgedParams) -> datetime:
    """The first instant (microsecond resolution) at which the position is in EMERGENCY."""
    step = params.loss_step_pct_per_hour
    accel_h = hours(params.acceleration_after)
    plain_h = params.max_loss_pct / step
    if plain_h <= accel_h:
        threshold_h = plain_h
    else:
        threshold_h = max(params.max_loss_pct / (step * params.acceleration_factor), accel_h)
    exact = threshold_h * Decimal(3_600_000_000)
    micros = exact.to_integral_value(rounding=ROUND_CEILING)
    if micros == exact:
        micros += 1  # strict comparison: the instant *at* the threshold is still progressive
    return aged_since(position, params) + params.grace_period + timedelta(microseconds=int(micros))


def band(
    position: AgedPosition, now: datetime, params: AgedParams, horizon: timedelta
) -> PriceBand:
    """Prices for which no aged close can fire at any time in ``[now, now + horizon)``.

    The target only moves toward the price over time (long: down), so the target at the end
    of the horizon bounds every earlier one; the emergency instant ends the band (from then
    the close is time-driven, the service schedules it at ``valid_until``).
    """
    now = require_aware(now)
    if position.trailing_active:
        return PriceBand.unbounded(now + horizon)
    emergency = emergency_at(position, params)
    if now >= emergency:
        return PriceBand.empty()
    end = min(now + horizon, emergency)
    # Evaluate just before ``end`` (the band is valid strictly before it).
    probe = max(now, end - timedelta(microseconds=1))
    phase, loss = phase_at(position, probe, params)
    target = _target(position, phase, loss, params)
    if target is None:
        return PriceBand.unbounded(end)
    if position.side is Side.LONG:
        return PriceBand(None, target, end)
    return PriceBand(target, None, end)
