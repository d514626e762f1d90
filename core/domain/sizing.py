"""Order sizing and price rounding against an exchange's precision and limits.

Why exact Decimal and explicit rounding directions: a quantity rounded *up* can exceed the
balance or the risk budget; a stop price rounded toward the market can sit on the wrong
side of the mark and trigger at once. Every rounding here states its direction:

- quantities round DOWN to the step (never more than the budget);
- stop prices round AWAY from the current price: a long's stop (below the price) rounds
  down, a short's stop (above the price) rounds up. The stop is at most one tick looser
  than computed, but it is always on the valid side of the price it was computed from;
- limit/target prices that must be *reached* before acting round TOWARD the position's
  favour (``round_price`` takes the direction explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from core.domain.sides import Side, price_against

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


class Rounding(StrEnum):
    DOWN = "down"  # toward -inf
    UP = "up"  # toward +inf


@dataclass(frozen=True, slots=True)
class MarketRules:
    """One market's precision and limits, as the exchange reports them (Decimal)."""

    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal = ZERO
    max_qty: Decimal | None = None
    min_notional: Decimal = ZERO


class SizingReject(StrEnum):
    INVALID_INPUT = "invalid_input"
    ZERO_AFTER_ROUNDING = "zero_after_rounding"
    BELOW_MIN_QTY = "below_min_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    ABOVE_MAX_QTY = "above_max_qty"


@dataclass(frozen=True, slots=True)
class SizingResult:
    """``quantity`` is None exactly when ``reject`` is set; ``detail`` says why for the log."""

    quantity: Decimal | None
    notional: Decimal
    margin: Decimal
    reject: SizingReject | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.reject is None


def round_to_step(value: Decimal, step: Decimal, rounding: Rounding) -> Decimal:
    """``value`` rounded to a multiple of ``step`` (any positive step, e.g. 0.5 or 0.0025)."""
    if not step > ZERO:
        raise ValueError(f"step must be positive, got {step}")
    mode = ROUND_FLOOR if rounding is Rounding.DOWN else ROUND_CEILING
    return (value / step).to_integral_value(rounding=mode) * step


def round_qty(quantity: Decimal, rules: MarketRules) -> Decimal:
    """Quantity rounded DOWN to the step size."""
    return round_to_step(quantity, rules.step_size, Rounding.DOWN)


def round_price(price: Decimal, tick_size: Decimal, rounding: Rounding) -> Decimal:
    """Price rounded to the tick in the given direction."""
    return round_to_step(price, tick_size, rounding)


def stop_rounding(side: Side) -> Rounding:
    """The safe direction for a stop: away from the price (long: down, short: up)."""
    return Rounding.DOWN if side is Side.LONG else Rounding.UP


def round_stop_price(stop: Decimal, tick_size: Decimal, side: Side) -> Decimal:
    """A stop price on the tick grid, rounded away from the current price (see module doc)."""
    return round_price(stop, tick_size, stop_rounding(side))


def stop_price_for(
    entry_price: Decimal, stop_pct: Decimal, side: Side, tick_size: Decimal | None = None
) -> Decimal:
    """The initial stop ``stop_pct`` % away from entry, on the loss side of the position.

    long: ``entry * (1 - pct/100)``, short: ``entry * (1 + pct/100)``; rounded away from the
    entry when a tick size is given. ``stop_pct`` must be in (0, 100).
    """
    if not (ZERO < stop_pct < HUNDRED) or not entry_price > ZERO:
        raise ValueError(f"invalid stop: entry={entry_price} pct={stop_pct}")
    stop = price_against(entry_price, stop_pct, side)
    return round_stop_price(stop, tick_size, side) if tick_size is not None else stop


def size_position(
    quote_amount: Decimal,
    price: Decimal,
    rules: MarketRules,
    leverage: Decimal = ONE,
    *,
    quote_is_margin: bool = False,
) -> SizingResult:
    """Quantity for a position of ``quote_amount`` at ``price``, within the market's limits.

    ``quote_amount`` is the position's notional in quote currency (SPEC: "sized in quote
    currency"); with ``quote_is_margin=True`` it is the margin and the notional is
    ``quote_amount * leverage``. The quantity rounds DOWN to the step; below min qty / min
    notional or above max qty is a typed reject, never a silent clamp (a clamp would open a
    position of a size nobody asked for). ``price`` is the reference price (mark/last); a
    market fill may differ, so services may size with a small buffer over min notional.
    """
    if not (quote_amount > ZERO and price > ZERO and leverage > ZERO):
        return _reject(
            SizingReject.INVALID_INPUT,
            f"amount={quote_amount} price={price} leverage={leverage}",
        )
    if not (rules.step_size > ZERO and rules.tick_size > ZERO):
        return _reject(SizingReject.INVALID_INPUT, "market has no step/tick size")
    target_notional = quote_amount * leverage if quote_is_margin else quote_amount
    quantity = round_qty(target_notional / price, rules)
    notional = quantity * price
    margin = notional / leverage
    if quantity <= ZERO:
        return _reject(
            SizingReject.ZERO_AFTER_ROUNDING,
            f"{target_notional} / {price} < step {rules.step_size}",
            notional,
            margin,
        )
    if quantity < rules.min_qty:
        return _reject(
            SizingReject.BELOW_MIN_QTY, f"qty {quantity} < min {rules.min_qty}", notional, margin
        )
    if notional < rules.min_notional:
        return _reject(
            SizingReject.BELOW_MIN_NOTIONAL,
            f"notional {notional} < min {rules.min_notional}",
            notional,
            margin,
        )
    if rules.max_qty is not None and quantity > rules.max_qty:
        return _reject(
            SizingReject.ABOVE_MAX_QTY, f"qty {quantity} > max {rules.max_qty}", notional, margin
        )
    return SizingResult(quantity, notional, margin, None, "ok")


def _reject(
    reason: SizingReject, detail: str, notional: Decimal = ZERO, margin: Decimal = ZERO
) -> SizingResult:
    return SizingResult(None, notional, margin, reason, detail)


def required_margin(notional: Decimal, leverage: Decimal) -> Decimal:
    """Initial margin of a position of ``notional`` at ``leverage`` (before fees)."""
    if not leverage > ZERO:
        raise ValueError(f"leverage must be positive, got {leverage}")
    return notional / leverage


def pct_change(from_price: Decimal, to_price: Decimal) -> Decimal:
    """``(to - from) / from * 100``."""
    return (to_price - from_price) / from_price * HUNDRED
