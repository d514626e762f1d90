"""The order executor: the one way an order of the engine reaches the exchange.

Every order the engine sends (entry, opening stop, trailing move, protection stop, rollback
close, emergency stop, manual / aged / emergency close) and every cancel (the rest of an
entry, an old stop after a move, surplus stops, zombies, leftovers after a close) goes
through here, in the same four steps:

1. **record the intent** with its deterministic client id (``record``, status ``intent``),
   committed by the caller before the order can exist;
2. **send it once** (``send`` / ``place_stop``);
3. on an **unknown outcome** (the answer was lost) **look it up by its client id**, with a
   bounded poll; never resend blindly: a second send of the same id is refused by the venue,
   a send under a new id could double the order;
4. **record the result** (``record`` with the order the venue reported).

Rules that used to be written at each call site live here once:

- a stop that would trigger at once (-2021 / 110092: the mark is already beyond it) is moved
  beyond the mark by ``protection_mark_buffer_percent`` and sent again, so adoption,
  recovery, protection and trailing all keep a position protected where the exchange
  refused the computed price (before, an adopted position already beyond its stop was
  rolled back, i.e. closed at market);
- a stop is looked up by its client id before every resend;
- a replacement is make before break (``replace_stop``): the new stop first, the old ones
  cancelled only once it is live; a failed cancel leaves both (reduce-only makes that
  harmless).

The executor holds no state between calls and opens no database session: the caller owns
the transactions (and the symbol lock) around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.domain.orders import OrderStatus, status_from_exchange
from core.domain.protection import safe_stop_price
from core.domain.sides import OrderSide, Side
from core.exchange import errors
from core.exchange.client_ids import client_order_id
from core.exchange.types import OrderSnapshot
from core.exchange.venue import Venue
from core.polling import Poll
from core.services.positions import record_order

if TYPE_CHECKING:
    from core.db.models import Order, Position
    from core.services.deps import Deps

#: how long a lost answer is looked up by client id before the outcome counts as unknown
LOOKUP_TIMEOUT = 2.0
#: how many times a stop refused as "would trigger immediately" is moved beyond the mark
MAX_MARK_MOVES = 2


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One order the engine means to send, keyed by its deterministic client id."""

    position_id: int | None
    exchange: str
    symbol: str
    client_id: str
    purpose: str
    side: OrderSide
    quantity: Decimal
    trigger_price: Decimal | None = None  # set: a reduce-only stop-market order
    reduce_only: bool = False
    stop: bool = False  # a stop-market order even before its price is known (a ledger row)

    @classmethod
    def of(
        cls,
        position: Position,
        purpose: str,
        side: OrderSide | str,
        quantity: Decimal,
        *,
        seq: int = 0,
        trigger_price: Decimal | None = None,
        reduce_only: bool = False,
    ) -> OrderIntent:
        """The intent of ``purpose`` (number ``seq``) for ``position``."""
        return cls(
            position_id=position.id,
            exchange=position.exchange,
            symbol=position.symbol,
            client_id=client_order_id(position.id, position.correlation_id, purpose, seq),
            purpose=purpose,
            side=OrderSide(side),
            quantity=quantity,
            trigger_price=trigger_price,
            reduce_only=reduce_only or trigger_price is not None,
        )

    @classmethod
    def from_ledger(cls, row: Order) -> OrderIntent:
        """The intent a ledger row recorded (to look it up, or to record its result)."""
        return cls(
            position_id=row.position_id,
            exchange=row.exchange,
            symbol=row.symbol,
            client_id=row.client_order_id,
            purpose=row.purpose,
            side=OrderSide(row.side),
            quantity=row.quantity,
            trigger_price=row.trigger_price,
            reduce_only=row.reduce_only,
            stop=row.order_type == "stop_market",
        )

    @property
    def is_stop(self) -> bool:
        return self.stop or self.trigger_price is not None

    @property
    def order_type(self) -> str:
        return "stop_market" if self.is_stop else "market"

    @property
    def protects(self) -> Side:
        """The side of the position this order reduces (a sell stop protects a long)."""
        return Side.LONG if self.side is OrderSide.SELL else Side.SHORT


@dataclass(frozen=True, slots=True)
class Sent:
    """What the venue holds for an intent after ``send`` / ``place_stop``."""

    order: OrderSnapshot
    intent: OrderIntent  # as sent: a stop's price may have been moved beyond the mark
    sent: bool = True  # False: found by the lookup before sending, nothing was sent
    after_unknown: errors.OutcomeUnknown | None = None  # found by the lookup after a lost answer
    moved_from: Decimal | None = None  # the stop price the venue refused as crossed

    @property
    def trigger_price(self) -> Decimal | None:
        if self.order.trigger_price is not None:
            return self.order.trigger_price
        return self.intent.trigger_price


class OutcomeStillUnknown(errors.OutcomeUnknown):
    """The answer was lost and the lookup by client id did not find the order (yet)."""


class LookupFailed(errors.Retryable):
    """The venue could not say whether an order exists: nothing was sent; ask again later."""


@dataclass(frozen=True, slots=True)
class OldOrder:
    """An order a replacement removes: by exchange id, or by client id when not known."""

    client_id: str | None
    exchange_id: str | None
    conditional: bool = True


@dataclass(frozen=True, slots=True)
class Cancelled:
    order: OldOrder
    exchange_id: str | None
    gone_before: bool  # nothing to cancel: already filled, cancelled or never placed
    failure: errors.ExchangeFailure | None = None


@dataclass(frozen=True, slots=True)
class Replacement:
    new: Sent
    cancels: tuple[Cancelled, ...]


def record(
    session: Session,
    intent: OrderIntent,
    status: OrderStatus | str = OrderStatus.INTENT,
    order: OrderSnapshot | None = None,
    *,
    quantity: Decimal | None = None,
    exchange_order_id: str | None = None,
) -> OrderStatus:
    """The intent's ledger row, upserted by client id (through the order state machine);
    returns the status the ledger kept (the stored one when the move was refused)."""
    trigger = intent.trigger_price
    if order is not None and order.trigger_price is not None:
        trigger = order.trigger_price
    return record_order(
        session,
        intent.position_id,
        exchange=intent.exchange,
        symbol=intent.symbol,
        client_order_id=intent.client_id,
        purpose=intent.purpose,
        side=intent.side.value,
        order_type=intent.order_type,
        quantity=quantity if quantity is not None else intent.quantity,
        status=str(status),
        exchange_order_id=order.id if order is not None else exchange_order_id,
        trigger_price=trigger,
        reduce_only=intent.reduce_only,
        filled_quantity=order.filled if order is not None else None,
        average_price=order.average if order is not None else None,
    )


def status_of(order: OrderSnapshot | None) -> OrderStatus:
    """The ledger's status for an order as the venue reports it (None: never placed)."""
    if order is None:
        return OrderStatus.REJECTED
    return status_from_exchange(order.status, filled=order.is_filled)


def record_result(session: Session, sent: Sent, *, quantity: Decimal | None = None) -> None:
    """The ledger row after a send: what the venue reported (status, id, fill, price)."""
    record(session, sent.intent, status_of(sent.order), sent.order, quantity=quantity)


@dataclass
class Executor:
    """Sends the engine's orders (see the module doc); one per use, cheap to build."""

    venue: Venue
    mark_buffer_pct: Decimal
    sleep: Callable[[float], None] = time.sleep
    lookup_timeout: float = LOOKUP_TIMEOUT

    @classmethod
    def of(cls, deps: Deps, sleep: Callable[[float], None] = time.sleep) -> Executor:
        return cls(deps.exchange, deps.settings.protection_mark_buffer_percent, sleep)

    # --- lookups -------------------------------------------------------------------------

    def lookup(self, intent: OrderIntent) -> OrderSnapshot | None:
        """The order of this intent on the venue, by client id; None if never placed."""
        return self.venue.fetch_order(intent.symbol, intent.client_id, conditional=intent.is_stop)

    def _lookup_quietly(self, intent: OrderIntent) -> OrderSnapshot | None:
        try:
            return self.lookup(intent)
        except errors.Retryable:
            return None  # cannot tell yet: the poll asks again

    def _after_unknown(self, intent: OrderIntent, timeout: float | None) -> OrderSnapshot | None:
        wait = self.lookup_timeout if timeout is None else timeout
        return Poll(wait, sleep=self.sleep).until(lambda: self._lookup_quietly(intent))

    # --- sending -------------------------------------------------------------------------

    def _create(self, intent: OrderIntent) -> OrderSnapshot:
        if intent.is_stop:
            assert intent.trigger_price is not None, f"stop {intent.client_id} without a price"
            return self.venue.create_stop(
                intent.symbol,
                intent.side.value,
                intent.quantity,
                intent.trigger_price,
                intent.client_id,
            )
        return self.venue.create_market_order(
            intent.symbol,
            intent.side.value,
            intent.quantity,
            intent.client_id,
            reduce_only=intent.reduce_only,
        )

    def send(
        self,
        intent: OrderIntent,
        *,
        lookup_first: bool = False,
        lookup_timeout: float | None = None,
    ) -> Sent:
        """Send once; a lost answer is looked up by client id, never sent again.

        ``lookup_first``: an earlier run may have sent it (recovery, a redelivered task):
        an order found under the client id is the answer and nothing is sent. Raises
        ``OutcomeStillUnknown`` when the answer was lost and the lookup finds nothing within
        ``lookup_timeout``; any other failure as the exchange adapter classified it.
        """
        if lookup_first:
            found = self.lookup(intent)
            if found is not None:
                return Sent(found, intent, sent=False)
        try:
            return Sent(self._create(intent), intent)
        except errors.OutcomeUnknown as exc:
            found = self._after_unknown(intent, lookup_timeout)
            if found is None:
                raise OutcomeStillUnknown(str(exc), code=exc.code) from exc
            return Sent(found, intent, after_unknown=exc)

    def place_stop(
        self, intent: OrderIntent, *, attempts: int = 1, lookup_first: bool = False
    ) -> Sent:
        """Place a stop so that it is live when this returns, or raise why it is not.

        Before every resend (and before the first send with ``lookup_first``) the stop is
        looked up by its client id: a live one is the answer; one that is no longer open
        (fired, cancelled) is an ``OrderRejected``. A price the venue refuses as crossed is
        moved beyond the mark (``beyond_mark``) and sent again; a retryable failure is tried
        again after a short pause, up to ``attempts`` sends; a permanent one is raised. A
        lookup the venue cannot answer raises ``LookupFailed``: nothing was decided.
        """
        assert intent.is_stop, f"{intent.client_id} is not a stop"
        last: errors.ExchangeFailure | None = None
        moved_from: Decimal | None = None
        moves = attempt = 0
        while attempt < attempts:
            if lookup_first or attempt or moves:
                found = self._lookup_before_send(intent)
                if found is not None:
                    return Sent(found, intent, sent=False, moved_from=moved_from)
            try:
                return Sent(self._create(intent), intent, moved_from=moved_from)
            except errors.WouldTriggerImmediately as exc:
                if moves >= MAX_MARK_MOVES:
                    raise
                moves, last = moves + 1, exc
                moved_from = intent.trigger_price if moved_from is None else moved_from
                intent = self.beyond_mark(intent)
                continue  # a refused order never existed: the move costs no attempt
            except errors.Retryable as exc:  # incl. a lost answer: looked up before a resend
                last = exc
                if attempt + 1 < attempts:
                    self.sleep(min(0.2 * (attempt + 1), 1.0))
                elif isinstance(exc, errors.OutcomeUnknown):
                    found = self._after_unknown(intent, None)
                    if found is not None and found.is_open:
                        return Sent(found, intent, after_unknown=exc, moved_from=moved_from)
            attempt += 1
        assert last is not None
        raise last

    def _lookup_before_send(self, intent: OrderIntent) -> OrderSnapshot | None:
        """A live stop under the intent's client id, None if it never landed; a stop that
        landed and is no longer open is refused (it fired or was cancelled)."""
        try:
            found = self.lookup(intent)
        except errors.Retryable as exc:
            raise LookupFailed(str(exc), code=exc.code) from exc
        if found is not None and not found.is_open:
            raise errors.OrderRejected(f"stop {intent.client_id} is {found.status}")
        return found

    def beyond_mark(self, intent: OrderIntent) -> OrderIntent:
        """The stop moved at least the buffer beyond the current mark (the one rule)."""
        assert intent.trigger_price is not None
        mark = self.venue.mark_price(intent.symbol)
        try:
            tick: Decimal | None = self.venue.rules(intent.symbol).tick_size
        except errors.SymbolUnavailable:
            tick = None  # a symbol that stopped trading still needs its stop: unrounded
        price, _ = safe_stop_price(
            intent.trigger_price, mark, intent.protects, self.mark_buffer_pct, tick
        )
        return replace(intent, trigger_price=price)

    def replace_stop(
        self,
        intent: OrderIntent,
        old: Iterable[OldOrder],
        *,
        attempts: int = 1,
        before_break: Callable[[], None] | None = None,
    ) -> Replacement:
        """Make before break: the new stop live first, then the old ones cancelled.

        If the new stop cannot be placed this raises and the old ones stay untouched.
        ``before_break`` runs between the two (a price batch holds its runs there until every
        run has sent: ``core.services.send_gate``).
        """
        new = self.place_stop(intent, attempts=attempts)
        if before_break is not None:
            before_break()
        return Replacement(new, self.cancel_each(intent.symbol, old))

    # --- cancelling ----------------------------------------------------------------------

    def cancel(self, symbol: str, order_id: str, *, conditional: bool = False) -> bool:
        """Cancel by exchange id; True if cancelled now, False if it was already gone."""
        return self.venue.cancel_order(symbol, order_id, conditional=conditional)

    def cancel_each(self, symbol: str, orders: Iterable[OldOrder]) -> tuple[Cancelled, ...]:
        """Cancel each order; a failure is reported for that one and the rest go on."""
        done: list[Cancelled] = []
        for old in orders:
            exchange_id = old.exchange_id
            try:
                if exchange_id is None and old.client_id is not None:
                    found = self.venue.fetch_order(
                        symbol, old.client_id, conditional=old.conditional
                    )
                    exchange_id = found.id if found is not None and found.is_open else None
                gone = exchange_id is None or not self.cancel(
                    symbol, exchange_id, conditional=old.conditional
                )
                done.append(Cancelled(old, exchange_id, gone))
            except errors.ExchangeFailure as exc:
                done.append(Cancelled(old, exchange_id, False, exc))
        return tuple(done)


def old_orders(rows: Sequence[tuple[str, str | None]]) -> tuple[OldOrder, ...]:
    """(client id, exchange id) ledger pairs as the stops a replacement removes."""
    return tuple(OldOrder(cid, eid) for cid, eid in rows)
