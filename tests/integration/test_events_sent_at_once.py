"""``record_now``: a hot path's events as one INSERT, the same rows ``record`` writes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Alert, Event
from core.db.session import unit_of_work
from core.events import EventContext, EventType, new_event, record, record_now

pytestmark = pytest.mark.integration
CTX = EventContext("binance", "BTCUSDT", 7, "corr-7")
COLUMNS = ("type", "severity", "exchange", "symbol", "position_id", "order_id", "correlation_id")


def stored() -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).order_by(Event.id)))


def row(event: Event) -> tuple[object, ...]:
    return (*(getattr(event, c) for c in COLUMNS), event.data)


def test_record_now_writes_what_record_writes_in_one_statement_in_order(clean_db):
    data = {"new_stop": Decimal("61800.10"), "reason": "trail"}
    with unit_of_work() as s:
        record(s, EventType.TRAILING_STOP_UPDATED, ctx=CTX, order_id="cid-1", **data)
    with unit_of_work() as s:
        record_now(
            s,
            new_event(EventType.TRAILING_STOP_UPDATED, ctx=CTX, order_id="cid-1", **data),
            new_event(EventType.TRAILING_STOP_BREAKEVEN, ctx=CTX, reason="be"),
        )
        assert not s.new  # nothing left for the flush
    by_record, first, second = stored()
    assert row(first) == row(by_record)
    assert first.data == {"new_stop": "61800.10", "reason": "trail"}  # Decimal as exact text
    assert second.type == EventType.TRAILING_STOP_BREAKEVEN.value
    assert second.id > first.id and first.created_at is not None


def test_record_now_keeps_the_order_of_events_recorded_before_it(clean_db):
    with unit_of_work() as s:
        record(s, EventType.TRAILING_STOP_ACTIVATED, ctx=CTX)
        record_now(s, new_event(EventType.TRAILING_STOP_UPDATED, ctx=CTX))
    assert [e.type for e in stored()] == [
        EventType.TRAILING_STOP_ACTIVATED.value,
        EventType.TRAILING_STOP_UPDATED.value,
    ]


def test_record_now_is_undone_with_the_callers_transaction(clean_db):
    with pytest.raises(RuntimeError), unit_of_work() as s:
        record_now(s, new_event(EventType.TRAILING_STOP_UPDATED, ctx=CTX))
        raise RuntimeError("the change failed")
    assert stored() == []


def test_an_alerting_event_through_record_now_keeps_its_alert_row(clean_db):
    with unit_of_work() as s:
        record_now(
            s,
            new_event(EventType.TRAILING_STOP_UPDATED, ctx=CTX),
            new_event(EventType.ZOMBIE_ALERT, ctx=CTX, orders=["x"]),
            new_event(EventType.TRAILING_STOP_BREAKEVEN, ctx=CTX),
        )
    events = stored()
    assert [e.type for e in events] == [
        EventType.TRAILING_STOP_UPDATED.value,
        EventType.ZOMBIE_ALERT.value,
        EventType.TRAILING_STOP_BREAKEVEN.value,
    ]
    with unit_of_work() as s:
        alerts = list(s.scalars(select(Alert)))
    assert [a.kind for a in alerts] == [EventType.ZOMBIE_ALERT.value]
    assert alerts[0].event_id == events[1].id
