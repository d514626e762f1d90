"""Protection: does every open position have a live, full stop on the exchange?

Ownership rule (why protection and trailing can never both place a stop):

- Each position has a durable ``stop_owner`` (``protection`` or ``trailing``), written
  only under the position's symbol lock, together with its event.
- Whoever places, moves or cancels a position's stop does so under that lock, after
  re-reading ``stop_owner``, and only if it is the owner (or takes ownership in the same
  locked section). Because both paths serialise on the lock and check the same durable
  flag, at most one of them acts on a position's stop at any time.
- Trailing owns the stop once it has activated (the service flips the owner when it
  first moves the stop). It is *healthy* while its heartbeat is younger than
  ``trailing_heartbeat_timeout``; a heartbeat means "the trailing path is watching this
  position" (its price task ran or its band was republished), not "the price moved".
- Protection takes over (``TAKE_OVER_FROM_TRAILING``) when trailing owns the stop but is
  stale, *or* when no full stop is live at all: a position without a stop is an
  emergency whoever owns it (trailing only wakes on price moves and would never notice
  an externally cancelled stop). A healthy trailing owner with a full live stop is left
  alone entirely, surplus included (trailing's make-before-break may be mid-flight).
- Trailing may take ownership back under the lock when it next moves the stop; its move
  replaces whatever stop is live (place new, then cancel the old ones).

Stops: a stop counts when it is a conditional reduce-only/closePosition order on the
closing side of the position's symbol and index (``orders.stops_for``); a
``closePosition`` stop with quantity 0 counts as full. A stop short of the position by
one lot (``step_size``) or more is partial: a new full stop is placed first, then the
partial one is cancelled (make before break). Less than a lot short is rounding; a whole
lot is not (on a symbol traded in whole units, a stop for 3 leaves a position of 4 a
quarter unprotected).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from core.domain.numbers import HUNDRED, ZERO
from core.domain.orders import ExchangeOrder, covers, pick_stop, stops_for
from core.domain.sides import Side, price_against
from core.domain.sizing import round_stop_price, stop_price_for
from core.domain.timeutil import require_aware


class StopOwner(StrEnum):
    PROTECTION = "protection"
    TRAILING = "trailing"


class ProtectionActionKind(StrEnum):
    OK = "ok"
    TAKE_OVER_FROM_TRAILING = "take_over_from_trailing"
    PLACE_STOP = "place_stop"
    CANCEL_SURPLUS = "cancel_surplus"
    ALERT_UNPROTECTED = "alert_unprotected"


@dataclass(frozen=True, slots=True)
class ProtectionParams:
    stop_loss_pct: Decimal = Decimal(2)
    mark_buffer_pct: Decimal = Decimal("0.5")
    trailing_heartbeat_timeout: timedelta = timedelta(minutes=5)
    unprotected_alert_after: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        if not ZERO < self.stop_loss_pct < HUNDRED:
            raise ValueError("stop_loss_pct must be in (0, 100)")
        if not ZERO < self.mark_buffer_pct < HUNDRED:
            raise ValueError("mark_buffer_pct must be in (0, 100)")


@dataclass(frozen=True, slots=True)
class ProtectedPosition:
    """An open position as protection sees it (DB record joined with trailing state).

    ``intended_stop``: the stop the engine last decided (trailing's current stop or the
    initial stop-loss); a replacement stop uses it so a take-over keeps trailing's gains.
    ``unprotected_since``: when protection first saw it without a full stop (persisted).
    """

    symbol: str
    side: Side
    quantity: Decimal
    entry_price: Decimal
    stop_owner: StopOwner = StopOwner.PROTECTION
    trailing_heartbeat_at: datetime | None = None
    intended_stop: Decimal | None = None
    unprotected_since: datetime | None = None
    position_idx: int = 0


@dataclass(frozen=True, slots=True)
class ProtectionAction:
    kind: ProtectionActionKind
    reason: str
    price: Decimal | None = None
    quantity: Decimal | None = None
    order_ids: tuple[str, ...] = ()
    duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ProtectionDecision:
    """Actions in execution order; persist ``owner`` and ``unprotected_since``.

    ``unprotected_since`` is None when a full stop is live now; after a successful
    PLACE_STOP the service clears it.
    """

    actions: tuple[ProtectionAction, ...]
    owner: StopOwner
    protected: bool
    kept_stop_id: str | None
    unprotected_since: datetime | None

    @property
    def kinds(self) -> tuple[ProtectionActionKind, ...]:
        return tuple(a.kind for a in self.actions)


def trailing_healthy(position: ProtectedPosition, now: datetime, params: ProtectionParams) -> bool:
    beat = position.trailing_heartbeat_at
    return beat is not None and now - beat <= params.trailing_heartbeat_timeout


def safe_stop_price(
    intended: Decimal,
    mark_price: Decimal,
    side: Side,
    buffer_pct: Decimal,
    tick_size: Decimal | None = None,
) -> tuple[Decimal, bool]:
    """A stop that cannot trigger at once: at least ``buffer_pct`` beyond the mark.

    long: ``min(intended, mark * (1 - buffer))``; short: ``max(intended, mark * (1 + b))``;
    rounded away from the price. Returns (price, adjusted).
    """
    limit = price_against(mark_price, buffer_pct, side)
    at_once = intended >= limit if side is Side.LONG else intended <= limit
    price, adjusted = (limit, True) if at_once else (intended, False)
    if tick_size is not None:
        price = round_stop_price(price, tick_size, side)
    return price, adjusted


def decide_protection(
    position: ProtectedPosition,
    orders: Iterable[ExchangeOrder],
    mark_price: Decimal,
    now: datetime,
    params: ProtectionParams,
    *,
    tick_size: Decimal | None = None,
    step_size: Decimal = ZERO,
    known_client_ids: frozenset[str] = frozenset(),
) -> ProtectionDecision:
    """Decide what protection does for one position, given the exchange's open orders."""
    now = require_aware(now)
    stops = stops_for(
        None, orders, symbol=position.symbol, side=position.side, position_idx=position.position_idx
    )
    full = [o for o in stops if covers(o, position.quantity, step_size)]
    partial = [o for o in stops if not covers(o, position.quantity, step_size)]
    actions: list[ProtectionAction] = []
    owner = position.stop_owner

    if owner is StopOwner.TRAILING:
        if trailing_healthy(position, now, params) and full:
            keep, _ = pick_stop(full, known_client_ids)
            assert keep is not None
            ok = ProtectionAction(ProtectionActionKind.OK, "trailing stop is healthy and live")
            return ProtectionDecision((ok,), owner, True, keep.id, None)
        why = (
            "trailing heartbeat stale"
            if not trailing_healthy(position, now, params)
            else "no full stop live under trailing"
        )
        actions.append(ProtectionAction(ProtectionActionKind.TAKE_OVER_FROM_TRAILING, why))
        owner = StopOwner.PROTECTION

    if full:
        keep, surplus = pick_stop(full, known_client_ids)
        assert keep is not None
        extra = tuple(o.id for o in (*surplus, *partial))
        if extra:
            actions.append(
                ProtectionAction(
                    ProtectionActionKind.CANCEL_SURPLUS,
                    f"keep {keep.id}; cancel {len(extra)} surplus/partial stop(s)",
                    order_ids=extra,
                )
            )
        else:
            actions.append(ProtectionAction(ProtectionActionKind.OK, f"stop {keep.id} live"))
        return ProtectionDecision(tuple(actions), owner, True, keep.id, None)

    # No full stop: place one first, then cancel partial ones.
    actions.extend(_restore(position, partial, mark_price, now, params, tick_size))
    since = position.unprotected_since or now
    return ProtectionDecision(tuple(actions), owner, False, None, since)


def _restore(
    position: ProtectedPosition,
    partial: list[ExchangeOrder],
    mark_price: Decimal,
    now: datetime,
    params: ProtectionParams,
    tick_size: Decimal | None,
) -> list[ProtectionAction]:
    """No full stop is live: place one (beyond the mark if the intended price is crossed),
    replace the partial ones, alert when unprotected for too long."""
    actions: list[ProtectionAction] = []
    intended = position.intended_stop or stop_price_for(
        position.entry_price, params.stop_loss_pct, position.side
    )
    price, adjusted = safe_stop_price(
        intended, mark_price, position.side, params.mark_buffer_pct, tick_size
    )
    why = "no stop live" if not partial else f"only partial stop(s) cover < {position.quantity}"
    if adjusted:
        why += f"; {intended} would trigger at once vs mark {mark_price}, moved to {price}"
    actions.append(
        ProtectionAction(
            ProtectionActionKind.PLACE_STOP, why, price=price, quantity=position.quantity
        )
    )
    if partial:
        actions.append(
            ProtectionAction(
                ProtectionActionKind.CANCEL_SURPLUS,
                "partial stop(s) replaced by the new full stop",
                order_ids=tuple(o.id for o in partial),
            )
        )
    duration = now - (position.unprotected_since or now)
    if duration >= params.unprotected_alert_after:
        actions.append(
            ProtectionAction(
                ProtectionActionKind.ALERT_UNPROTECTED,
                f"unprotected for {duration.total_seconds():.0f}s",
                duration=duration,
            )
        )
    return actions
