"""Services that are handed a unit of work (retention, the give-up event, health) run against
a fake one: no database, and the test sees each transaction they open and what it wrote."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from core.clock import SYSTEM_CLOCK
from core.config import load_settings
from core.db.models import Alert, Event
from core.events import EventType
from core.services.give_up import record_gave_up
from core.services.health import FAIL, OK, Component, HealthChecker, HealthReport
from core.services.retention import purge_events


@dataclass
class Deleted:
    rowcount: int


@dataclass
class FakeSession:
    """Answers each statement with the next row count; keeps what was added."""

    rowcounts: list[int]
    statements: list[Any] = field(default_factory=list)
    added: list[Any] = field(default_factory=list)

    def execute(self, statement: Any, params: Any = None) -> Deleted:
        self.statements.append(statement)
        return Deleted(self.rowcounts.pop(0) if self.rowcounts else 0)

    def add(self, row: Any) -> None:
        self.added.append(row)


@dataclass
class FakeUnitOfWork:
    """One FakeSession per transaction, all sharing the same row counts; a committed
    transaction's additions are kept in ``committed``."""

    rowcounts: list[int] = field(default_factory=list)
    down: bool = False  # the database refuses every connection
    opened: int = 0
    committed: list[list[Any]] = field(default_factory=list)

    @contextmanager
    def __call__(self) -> Iterator[FakeSession]:
        if self.down:
            raise OperationalError("SELECT 1", {}, Exception("connection refused\nsecond line"))
        self.opened += 1
        session = FakeSession(self.rowcounts)
        yield session
        self.committed.append(session.added)


NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_retention_deletes_batch_by_batch_each_in_its_own_transaction() -> None:
    uow = FakeUnitOfWork(rowcounts=[10, 10, 3])
    result = purge_events(NOW, keep_days=30, keep_critical_days=90, batch=10, uow=uow)
    assert (result.deleted, result.batches) == (23, 3)  # a short batch means nothing is left
    assert uow.opened == 3


def test_retention_stops_after_its_batch_budget_even_with_more_to_delete() -> None:
    uow = FakeUnitOfWork(rowcounts=[5] * 10)
    result = purge_events(NOW, keep_days=30, keep_critical_days=90, batch=5, max_batches=4, uow=uow)
    assert (result.deleted, result.batches, uow.opened) == (20, 4, 4)


def test_a_task_that_gave_up_is_one_critical_event_with_its_alert() -> None:
    uow = FakeUnitOfWork()
    record_gave_up("vigil.stops.settle_close", 42, 9, TimeoutError("store unreachable"), uow)
    [[event, alert]] = uow.committed
    assert isinstance(event, Event) and event.type == EventType.TASK_GAVE_UP
    assert event.severity == "critical" and event.position_id == 42
    assert event.data["attempts"] == 9 and event.data["error"] == "store unreachable"
    assert isinstance(alert, Alert)


def test_a_give_up_that_cannot_be_written_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="core.services.give_up"):
        record_gave_up(
            "vigil.stops.settle_close", 42, 9, TimeoutError("x"), FakeUnitOfWork(down=True)
        )
    assert "event not recorded" in caplog.text


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def checker(uow: FakeUnitOfWork) -> HealthChecker:
    return HealthChecker(
        load_settings(),
        SYSTEM_CLOCK,
        lambda: None,  # type: ignore[arg-type,return-value]
        FakeRedis(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        exchange_name="binance",
        uow=uow,
    )


def test_the_database_component_reads_through_the_unit_of_work() -> None:
    assert checker(FakeUnitOfWork()).database() == Component(OK)
    down = checker(FakeUnitOfWork(down=True)).database()
    assert down.status == FAIL
    assert (
        "connection refused" in down.detail["error"] and "second line" not in down.detail["error"]
    )


def test_a_new_set_of_failing_components_is_recorded_once() -> None:
    uow = FakeUnitOfWork()
    health = checker(uow)
    report = HealthReport(
        NOW, {"beat": Component(FAIL, {"error": "stale"}), "redis": Component(OK)}
    )
    health._record_change(report)
    health._record_change(report)  # the same failing set again: nothing new to say
    [[event]] = uow.committed
    assert event.type == EventType.HEALTH_CHECK_FAILED and event.data["failing"] == ["beat"]
    health._record_change(HealthReport(NOW, {"beat": Component(OK)}))
    health._record_change(report)  # failing again after a recovery: a new event
    assert len(uow.committed) == 2
