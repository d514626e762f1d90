"""The order executor (core/services/executor.py) against a small in-memory venue: one send
per intent, a lost answer looked up by client id and never resent blindly, a crossed stop
moved beyond the mark, make before break."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from core.domain.sides import OrderSide
from core.domain.sizing import MarketRules
from core.exchange import errors
from core.exchange.types import OrderSnapshot
from core.services.executor import (
    Executor,
    LookupFailed,
    OldOrder,
    OrderIntent,
    OutcomeStillUnknown,
)

D = Decimal


def snapshot(cid: str, *, trigger: Decimal | None, quantity: Decimal, status: str = "open"):
    return OrderSnapshot(
        id=f"x-{cid}",
        client_id=cid,
        symbol="BTCUSDT",
        side="sell",
        type="stop_market" if trigger is not None else "market",
        status=status,
        amount=quantity,
        filled=D(0) if trigger is not None else quantity,
        average=None,
        price=None,
        trigger_price=trigger,
        reduce_only=trigger is not None,
        close_position=False,
        conditional=trigger is not None,
        position_idx=0,
        created_at=None,
    )


@dataclass
class FakeVenue:
    """Orders by client id; scripted failures per call; a mark price."""

    name: str = "binance"
    mark: Decimal = D(60000)
    orders: dict[str, OrderSnapshot] = field(default_factory=dict)
    failures: list[errors.ExchangeFailure | None] = field(default_factory=list)
    land_anyway: bool = False  # a failure after the venue accepted (answer lost)
    creates: list[tuple[str, Decimal | None]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    lookups: int = 0
    cancel_fails: set[str] = field(default_factory=set)

    def rules(self, symbol: str) -> MarketRules:
        return MarketRules(tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"))

    def mark_price(self, symbol: str) -> Decimal:
        return self.mark

    def _create(self, cid: str, quantity: Decimal, trigger: Decimal | None) -> OrderSnapshot:
        self.creates.append((cid, trigger))
        if cid in self.orders:
            raise errors.OrderRejected(f"duplicate client id {cid}")
        failure = self.failures.pop(0) if self.failures else None
        if trigger is not None and failure is None:
            crossed = trigger >= self.mark  # a sell stop at or above the mark fires at once
            if crossed:
                raise errors.WouldTriggerImmediately("would trigger immediately", code=-2021)
        if failure is None or self.land_anyway:
            self.orders[cid] = snapshot(cid, trigger=trigger, quantity=quantity)
        if failure is not None:
            raise failure
        return self.orders[cid]

    def create_market_order(self, symbol, side, quantity, client_id, *, reduce_only=False):
        return self._create(client_id, quantity, None)

    def create_stop(
        self, symbol, side, quantity, trigger_price, client_id, *, close_position=False
    ):
        return self._create(client_id, quantity, trigger_price)

    def fetch_order(self, symbol, client_id, *, conditional=False):
        self.lookups += 1
        return self.orders.get(client_id)

    def cancel_order(self, symbol, order_id, *, conditional=False):
        if order_id in self.cancel_fails:
            raise errors.Retryable("cancel timed out")
        self.cancels.append(order_id)
        for cid, order in self.orders.items():
            if order.id == order_id and order.status == "open":
                self.orders[cid] = snapshot(
                    cid, trigger=order.trigger_price, quantity=order.amount, status="canceled"
                )
                return True
        return False

    def open_orders(self, symbol=None):
        return [o for o in self.orders.values() if o.status == "open"]

    def positions(self):
        return []

    def trades(self, symbol, since=None):
        return []


def intent(cid: str = "v1-ab-s0", trigger: Decimal | None = D(58800)) -> OrderIntent:
    return OrderIntent(
        position_id=1,
        exchange="binance",
        symbol="BTCUSDT",
        client_id=cid,
        purpose="stop" if trigger is not None else "close",
        side=OrderSide.SELL,
        quantity=D("0.01"),
        trigger_price=trigger,
        reduce_only=True,
    )


def executor(venue: FakeVenue) -> Executor:
    return Executor(venue, mark_buffer_pct=D("0.5"), sleep=lambda _: None, lookup_timeout=0)


def test_an_order_is_sent_once():
    venue = FakeVenue()
    sent = executor(venue).send(intent(trigger=None))
    assert sent.sent and sent.order.client_id == "v1-ab-s0"
    assert venue.creates == [("v1-ab-s0", None)]


def test_a_lost_answer_is_looked_up_by_client_id_not_sent_again():
    venue = FakeVenue(failures=[errors.OutcomeUnknown("timeout")], land_anyway=True)
    sent = executor(venue).send(intent(trigger=None))
    assert sent.after_unknown is not None and sent.order.client_id == "v1-ab-s0"
    assert len(venue.creates) == 1 and venue.lookups == 1


def test_a_lost_answer_that_never_landed_stays_unknown_and_is_not_resent():
    venue = FakeVenue(failures=[errors.OutcomeUnknown("timeout")])
    with pytest.raises(OutcomeStillUnknown):
        executor(venue).send(intent(trigger=None))
    assert len(venue.creates) == 1


def test_lookup_first_finds_what_an_earlier_run_sent_and_sends_nothing():
    venue = FakeVenue()
    venue.orders["v1-ab-r0"] = snapshot("v1-ab-r0", trigger=None, quantity=D("0.01"))
    sent = executor(venue).send(intent("v1-ab-r0", None), lookup_first=True)
    assert not sent.sent and venue.creates == []


def test_a_stop_refused_as_crossed_is_moved_beyond_the_mark_by_the_buffer():
    venue = FakeVenue(mark=D(58000))  # a long's stop at 58800 is above the mark already
    sent = executor(venue).place_stop(intent(trigger=D(58800)))
    assert sent.moved_from == D(58800)
    assert sent.trigger_price == D("57710.0")  # 58000 * (1 - 0.5 %), rounded down to the tick
    assert [t for _, t in venue.creates] == [D(58800), D("57710.0")]


def test_a_stop_is_looked_up_before_every_resend():
    venue = FakeVenue(failures=[errors.Retryable("503")])
    sent = executor(venue).place_stop(intent(), attempts=3)
    assert sent.sent and len(venue.creates) == 2 and venue.lookups == 1


def test_a_stop_whose_lost_send_landed_is_found_not_doubled():
    venue = FakeVenue(failures=[errors.OutcomeUnknown("timeout")], land_anyway=True)
    sent = executor(venue).place_stop(intent(), attempts=3)
    assert not sent.sent and len(venue.creates) == 1


def test_a_stop_that_no_longer_is_open_is_refused_not_replaced_under_the_same_id():
    venue = FakeVenue()
    venue.orders["v1-ab-s0"] = snapshot(
        "v1-ab-s0", trigger=D(58800), quantity=D("0.01"), status="canceled"
    )
    with pytest.raises(errors.OrderRejected):
        executor(venue).place_stop(intent(), lookup_first=True)
    assert venue.creates == []


def test_a_lookup_the_venue_cannot_answer_is_not_a_refusal():
    venue = FakeVenue()

    def unreachable(*args, **kwargs):
        raise errors.Retryable("timeout")

    venue.fetch_order = unreachable  # type: ignore[method-assign]
    with pytest.raises(LookupFailed):
        executor(venue).place_stop(intent(), lookup_first=True)


def test_a_permanent_refusal_is_raised_after_one_send():
    venue = FakeVenue(failures=[errors.InsufficientFunds("margin")])
    with pytest.raises(errors.InsufficientFunds):
        executor(venue).place_stop(intent(), attempts=3)
    assert len(venue.creates) == 1


def test_replace_is_make_before_break():
    venue = FakeVenue()
    old = snapshot("v1-ab-s1", trigger=D(58000), quantity=D("0.01"))
    venue.orders["v1-ab-s1"] = old
    done = executor(venue).replace_stop(intent("v1-ab-s2", D(59000)), [OldOrder("v1-ab-s1", None)])
    assert done.new.order.client_id == "v1-ab-s2"
    assert [c.exchange_id for c in done.cancels] == [old.id] and venue.cancels == [old.id]
    assert venue.orders["v1-ab-s1"].status == "canceled"


def test_a_replacement_that_cannot_be_placed_leaves_the_old_stop():
    venue = FakeVenue(failures=[errors.InsufficientFunds("margin")])
    venue.orders["v1-ab-s1"] = snapshot("v1-ab-s1", trigger=D(58000), quantity=D("0.01"))
    with pytest.raises(errors.InsufficientFunds):
        executor(venue).replace_stop(intent("v1-ab-s2", D(59000)), [OldOrder("v1-ab-s1", None)])
    assert venue.cancels == [] and venue.orders["v1-ab-s1"].status == "open"


def test_a_cancel_that_fails_is_reported_and_the_others_go_on():
    venue = FakeVenue()
    venue.cancel_fails = {"x-a"}
    done = executor(venue).cancel_each("BTCUSDT", [OldOrder("a", "x-a"), OldOrder("b", "x-b")])
    assert done[0].failure is not None and done[1].failure is None and done[1].gone_before
