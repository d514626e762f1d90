"""Zombie orders: open orders that no longer serve a position, classified against exchange truth.

Why: a leftover reduce-only stop is harmless until the engine (or a human) opens a new
position on the symbol, then it closes that position at a random moment; a leftover entry
order opens a position nobody tracks. The old bot ran its cleanup only periodically and
classified from a cached snapshot; here the classification is a pure function of one
snapshot, and two safety valves keep it from cancelling live protection:

- ``busy_symbols``: symbols with an opening or closing in flight (intermediate states).
  Their orders are never judged: the position may exist on the exchange before the
  snapshot shows it, and that path cleans up after itself.
- ``positions_as_of``: when the position snapshot was taken. An order created after it is
  never judged (its position may be newer than the snapshot).

Rules, in order (the first that applies wins):

1. no position on the symbol:
   a closing order (reduce-only / closePosition / closeOnTrigger) or any conditional
   order (stop / take-profit; the engine places no conditional entries) -> ``no_position``;
   a plain entry order older than ``stale_entry_after`` -> ``stale_entry`` (younger ones
   are kept: they may be a manual order just placed or an opening in flight);
2. positions on the symbol but none in the order's position index (Bybit hedge mode
   1/2 vs one-way 0) -> ``wrong_position_idx``;
3. a closing order on the same side as the position (it cannot reduce it: e.g. a BUY
   reduce-only on a long, a SELL-to-close on a short) -> ``wrong_side``;
4. a non-closing order that would flip the position (opposite side, quantity above the
   position's) -> ``would_flip``; a non-closing order on the position's side would increase
   it (the engine never scales in) -> ``would_increase``;
5. stop-losses of one position: the engine's own (known client id, newest) is kept, the
   rest are ``surplus_stop``.

Take-profits and smaller opposite-side orders on a live position are kept (a human may
have placed them; they reduce risk).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.domain.orders import ExchangeOrder, ExchangePosition, pick_stop, stops_for
from core.domain.timeutil import require_aware

__all__ = [
    "ExchangeOrder",
    "ExchangePosition",
    "ZombieParams",
    "ZombieReason",
    "ZombieReport",
    "ZombieVerdict",
    "classify_orders",
]


class ZombieReason(StrEnum):
    NO_POSITION = "no_position"
    STALE_ENTRY = "stale_entry"
    WRONG_POSITION_IDX = "wrong_position_idx"
    WRONG_SIDE = "wrong_side"
    WOULD_FLIP = "would_flip"
    WOULD_INCREASE = "would_increase"
    SURPLUS_STOP = "surplus_stop"


@dataclass(frozen=True, slots=True)
class ZombieParams:
    stale_entry_after: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class ZombieVerdict:
    order: ExchangeOrder
    reason: ZombieReason
    detail: str


@dataclass(frozen=True, slots=True)
class ZombieReport:
    """``cancel``: orders to cancel with why; ``keep``: everything else (with no judgement)."""

    cancel: tuple[ZombieVerdict, ...]
    keep: tuple[ExchangeOrder, ...]


def classify_orders(
    orders: Iterable[ExchangeOrder],
    positions: Iterable[ExchangePosition],
    now: datetime,
    params: ZombieParams | None = None,
    *,
    known_client_ids: frozenset[str] = frozenset(),
    busy_symbols: frozenset[str] = frozenset(),
    positions_as_of: datetime | None = None,
) -> ZombieReport:
    """Split one exchange's open orders into zombies (with reasons) and kept orders."""
    now = require_aware(now)
    params = params or ZombieParams()
    by_symbol: dict[str, list[ExchangePosition]] = defaultdict(list)
    for p in positions:
        if p.quantity > 0:
            by_symbol[p.symbol].append(p)
    order_list = sorted(orders, key=lambda o: o.id)
    cancel: list[ZombieVerdict] = []
    judged: list[ExchangeOrder] = []
    keep: list[ExchangeOrder] = []
    for order in order_list:
        if order.symbol in busy_symbols or _newer_than_snapshot(order, positions_as_of):
            keep.append(order)
            continue
        verdict = _judge(order, by_symbol.get(order.symbol, []), now, params)
        if verdict is None:
            judged.append(order)
        else:
            cancel.append(verdict)
    # Surplus stops per position slot among the orders that survived the per-order rules.
    surplus_ids: set[str] = set()
    for plist in by_symbol.values():
        for position in plist:
            stops = stops_for(position, judged)
            _, surplus = pick_stop(stops, known_client_ids)
            for o in surplus:
                surplus_ids.add(o.id)
                cancel.append(
                    ZombieVerdict(
                        o, ZombieReason.SURPLUS_STOP, f"{len(stops)} stops for one position"
                    )
                )
    keep.extend(o for o in judged if o.id not in surplus_ids)
    return ZombieReport(tuple(cancel), tuple(sorted(keep, key=lambda o: o.id)))


def _newer_than_snapshot(order: ExchangeOrder, as_of: datetime | None) -> bool:
    return as_of is not None and order.created_at is not None and order.created_at > as_of


def _judge(
    order: ExchangeOrder,
    positions: Sequence[ExchangePosition],
    now: datetime,
    params: ZombieParams,
) -> ZombieVerdict | None:
    if not positions:
        return _judge_without_position(order, now, params)
    slot = [p for p in positions if p.position_idx == order.position_idx]
    if not slot:
        idxs = sorted({p.position_idx for p in positions})
        return ZombieVerdict(
            order,
            ZombieReason.WRONG_POSITION_IDX,
            f"positionIdx {order.position_idx}, positions use {idxs}",
        )
    position = slot[0]
    if order.is_closing:
        if order.side is not position.side.close_order_side:
            return ZombieVerdict(
                order,
                ZombieReason.WRONG_SIDE,
                f"{order.side.value} close order cannot reduce a {position.side.value}",
            )
        return None
    if order.side is position.side.entry_order_side:
        return ZombieVerdict(
            order,
            ZombieReason.WOULD_INCREASE,
            f"{order.side.value} {order.quantity} adds to a {position.side.value}",
        )
    if order.quantity > position.quantity:
        return ZombieVerdict(
            order,
            ZombieReason.WOULD_FLIP,
            f"{order.quantity} > position {position.quantity} and not reduce-only",
        )
    return None


def _judge_without_position(
    order: ExchangeOrder, now: datetime, params: ZombieParams
) -> ZombieVerdict | None:
    if order.needs_a_position:
        return ZombieVerdict(order, ZombieReason.NO_POSITION, f"{order.type} with no position")
    if order.created_at is None:
        # Unknown age: only a closing order can be judged without a position.
        return None
    age = now - order.created_at
    if age > params.stale_entry_after:
        return ZombieVerdict(
            order, ZombieReason.STALE_ENTRY, f"entry order {age} old and no position"
        )
    return None
