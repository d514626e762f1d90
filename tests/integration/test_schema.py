"""The database refuses what must never happen, whatever the code does."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from core.db import migrate
from core.db.models import (
    AgedPosition,
    AgedPositionTransition,
    Event,
    Position,
    TrailingStop,
)
from core.domain.positions import NON_TERMINAL, TERMINAL, PositionStatus
from core.events import EventContext, EventType, Severity, record

pytestmark = pytest.mark.integration


def make_position(status: str, symbol: str = "BTCUSDT", **kw) -> Position:
    return Position(
        exchange=kw.pop("exchange", "binance"),
        symbol=symbol,
        side=kw.pop("side", "long"),
        status=status,
        quantity=kw.pop("quantity", Decimal("0.01")),
        correlation_id=kw.pop("correlation_id", "c-1"),
        **kw,
    )


@pytest.mark.parametrize("first", sorted(NON_TERMINAL))
@pytest.mark.parametrize("second", sorted(NON_TERMINAL))
def test_two_non_terminal_positions_for_one_symbol_are_refused(session, first, second):
    session.add(make_position(first))
    session.commit()
    session.add(make_position(second))
    with pytest.raises(IntegrityError, match="uq_positions_one_open_per_symbol"):
        session.commit()


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_positions_do_not_block_a_new_opening(session, terminal):
    session.add_all([make_position(terminal), make_position(terminal)])
    session.commit()
    session.add(make_position(PositionStatus.PENDING_ENTRY))
    session.commit()


def test_same_symbol_on_another_exchange_is_a_different_position(session):
    session.add(make_position("active", exchange="binance"))
    session.add(make_position("active", exchange="bybit"))
    session.commit()


@pytest.mark.parametrize(
    "field,value,constraint",
    [
        ("status", "open", "ck_positions_status"),
        ("side", "buy", "ck_positions_side"),
        ("quantity", Decimal("-1"), "ck_positions_quantity_nonneg"),
    ],
)
def test_check_constraints_refuse_bad_position_values(session, field, value, constraint):
    position = make_position("active")
    setattr(position, field, value)
    session.add(position)
    with pytest.raises(IntegrityError, match=constraint):
        session.commit()


def test_money_keeps_eight_decimals_exactly(session):
    price = Decimal("64123.12345678")
    session.add(make_position("active", entry_price=price, quantity=Decimal("0.00000001")))
    session.commit()
    stored = session.scalars(select(Position)).one()
    assert stored.entry_price == price
    assert stored.quantity == Decimal("0.00000001")


def test_deleting_a_position_cascades_to_trailing_and_aged_state(session):
    position = make_position("active")
    session.add(position)
    session.flush()
    now = datetime.now(UTC)
    session.add(TrailingStop(position_id=position.id, state="inactive", owner="trailing"))
    session.add(AgedPosition(position_id=position.id, phase="grace", detected_at=now))
    session.add(AgedPositionTransition(position_id=position.id, to_phase="grace"))
    session.commit()
    session.execute(text("DELETE FROM positions WHERE id = :id"), {"id": position.id})
    session.commit()
    for model in (TrailingStop, AgedPosition, AgedPositionTransition):
        assert session.scalars(select(model)).all() == []


def test_trailing_state_cannot_exist_without_its_position(session):
    session.add(TrailingStop(position_id=999_999, state="inactive", owner="trailing"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_an_event_exists_only_if_its_change_committed(session):
    ctx = EventContext(exchange="binance", symbol="BTCUSDT", correlation_id="c-9")
    session.add(make_position("pending_entry"))
    record(session, EventType.POSITION_CREATED, ctx=ctx, quantity=Decimal("0.5"))
    session.rollback()
    assert session.scalars(select(Event)).all() == []

    position = make_position("pending_entry")
    session.add(position)
    session.flush()
    record(
        session,
        EventType.POSITION_CREATED,
        severity=Severity.INFO,
        ctx=ctx,
        position_id=position.id,
        quantity=Decimal("0.5"),
    )
    session.commit()
    event = session.scalars(select(Event)).one()
    assert event.type == "position_created"
    assert event.position_id == position.id
    assert event.correlation_id == "c-9"
    assert event.data == {"quantity": "0.5"}


def test_the_engine_queries_have_their_indexes(database_url):
    insp = inspect(create_engine(database_url))
    event_indexes = {tuple(ix["column_names"]) for ix in insp.get_indexes("events")}
    for cols in [
        ("created_at",),
        ("symbol", "created_at"),
        ("type", "created_at"),
        ("correlation_id",),
        ("position_id",),
    ]:
        assert cols in event_indexes
    position_indexes = {tuple(ix["column_names"]) for ix in insp.get_indexes("positions")}
    assert ("status",) in position_indexes
    assert ("exchange", "symbol", "status") in position_indexes


def test_migrations_round_trip(postgres_server):
    postgres_server.create_database("vigil_roundtrip")
    from core.endpoints import embedded_database_url

    url = embedded_database_url(postgres_server.port, "vigil_roundtrip")
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision(url)
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    migrate.upgrade(url)
    migrate.ensure_current(url)


def test_ensure_current_refuses_an_unmigrated_database(postgres_server):
    postgres_server.create_database("vigil_empty")
    from core.endpoints import embedded_database_url

    with pytest.raises(migrate.SchemaNotCurrent, match="vigil db upgrade"):
        migrate.ensure_current(embedded_database_url(postgres_server.port, "vigil_empty"))
