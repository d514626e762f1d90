"""Services take their transactions from ``Deps``: a unit test hands them a fake unit of work
and a fake venue, and can tell that no exchange call happens inside a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from core.clock import SYSTEM_CLOCK
from core.config import load_settings
from core.db.models import Event
from core.domain.client_ids import client_order_id
from core.events import EventType
from core.exchange.types import OrderSnapshot
from core.services.closing import cancel_leftovers, record_cancelled_leftovers
from core.services.deps import Deps


class FakeSession:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)

    def flush(self) -> None:
        pass


@dataclass
class FakeUnitOfWork:
    """Counts the transactions open now; keeps what each committed."""

    open: int = 0
    committed: list[list[Any]] = field(default_factory=list)

    @contextmanager
    def __call__(self) -> Iterator[FakeSession]:
        session = FakeSession()
        self.open += 1
        try:
            yield session
            self.committed.append(session.added)
        finally:
            self.open -= 1


def order(cid: str | None, oid: str, symbol: str = "BTCUSDT") -> OrderSnapshot:
    return OrderSnapshot(
        id=oid,
        client_id=cid,
        symbol=symbol,
        side="sell",
        type="stop_market",
        status="open",
        amount=Decimal(1),
        filled=Decimal(0),
        average=None,
        price=None,
        trigger_price=Decimal(100),
        reduce_only=True,
        close_position=False,
        conditional=True,
        position_idx=0,
        created_at=datetime.now(UTC),
    )


class OutsideTransactionsVenue:
    """A venue that notes every call made while the fake unit of work has one open."""

    name = "binance"

    def __init__(self, uow: FakeUnitOfWork, orders: list[OrderSnapshot]) -> None:
        self.uow = uow
        self.orders = orders
        self.cancelled: list[str] = []
        self.inside_transaction: list[str] = []

    def _called(self, name: str) -> None:
        if self.uow.open:
            self.inside_transaction.append(name)

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        self._called("open_orders")
        return list(self.orders)

    def cancel_order(self, symbol: str, order_id: str, *, conditional: bool = False) -> bool:
        self._called("cancel_order")
        self.cancelled.append(order_id)
        return True


def test_leftovers_are_cancelled_outside_transactions_and_recorded_after() -> None:
    uow = FakeUnitOfWork()
    own_stop = client_order_id(7, "corr-7", "stop")
    others = client_order_id(8, "corr-8", "stop")
    venue = OutsideTransactionsVenue(
        uow,
        [order(own_stop, "1"), order(others, "2"), order(None, "3"), order(own_stop, "4", "ETH")],
    )
    deps = Deps(load_settings(), venue, None, SYSTEM_CLOCK, uow)  # type: ignore[arg-type]
    position = SimpleNamespace(id=7, symbol="BTCUSDT", exchange="binance", correlation_id="corr-7")

    cancelled = cancel_leftovers(deps, position)  # type: ignore[arg-type]
    assert venue.cancelled == ["1"]  # only this position's own orders on its own symbol
    assert uow.committed == []  # the exchange part writes nothing

    with deps.unit_of_work() as session:
        record_cancelled_leftovers(session, position, cancelled)  # type: ignore[arg-type]
    [[event]] = uow.committed
    assert isinstance(event, Event) and event.type == EventType.ORPHANED_SL_CLEANED
    assert event.position_id == 7 and event.order_id == own_stop
    assert venue.inside_transaction == []


def test_record_alone_goes_through_the_injected_unit_of_work() -> None:
    uow = FakeUnitOfWork()
    deps = Deps(load_settings(), None, None, SYSTEM_CLOCK, uow)  # type: ignore[arg-type]
    deps.record_alone(EventType.EXCHANGE_ERROR, exchange="binance", error="boom")
    [[event]] = uow.committed
    assert event.type == EventType.EXCHANGE_ERROR and event.exchange == "binance"
    assert uow.open == 0
