"""What one stop move costs in round trips, counted on the real stores: SQL statements sent to
PostgreSQL and commands run by Redis, for a run of the price path that moves a live stop.

Each budget is what the move needs (the fencing token with the position, the decision and its
intent, the accepted state, the ledger's rows, the events; the window, the lock, the band),
so a change that adds a round trip to every move fails here, not only in a benchmark."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import event, func, select, text

from core import locks
from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import get_engine, unit_of_work
from core.domain.client_ids import client_order_id
from core.redis_scripts import run_script
from core.services import price_path, stop_rows
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position, record_order
from core.services.tick_window import TICK_SCRIPT, pending_key, window_key

pytestmark = pytest.mark.integration
EX = "binance"
SYMBOL = "BTCUSDT"


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    """Every SQL statement this process sends to PostgreSQL during the block."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    def commit(_conn: Any) -> None:
        sent.append("COMMIT")

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", commit)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine, "commit", commit)


@contextmanager
def counted_round_trips(monkeypatch: Any) -> Iterator[list[str]]:
    """Every request the run's thread sends to Redis during the block (a pipeline is one),
    through any client (the run's own, the metrics'); not the lease threads' renewals, whose
    number depends on how long the run takes."""
    sent: list[str] = []
    original = redis.connection.AbstractConnection.send_packed_command
    run_thread = threading.current_thread()

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        if threading.current_thread() is run_thread:
            first = command[0] if isinstance(command, list) else command
            sent.append(bytes(first)[:60].decode(errors="replace").split("\r\n")[2])
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    try:
        yield sent
    finally:
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", original)


def tick_leaves_band(client: Any, price: Decimal) -> None:
    """What the ingest does for a tick outside the band: the window grows, the flag is set."""
    ms = int(time.time() * 1000)
    keys = (window_key(EX, SYMBOL), pending_key(EX, SYMBOL))
    run_script(client, TICK_SCRIPT, 2, *keys, str(price), ms, 30_000)


def moves(pid: int) -> int:
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.position_id == pid, Event.type == "trailing_stop_updated")
            )
            or 0
        )


@pytest.fixture
def trailing_position(sim, make_deps, redis_client):
    deps = make_deps(trailing_min_update_interval=0)
    sim.set_price(SYMBOL, "60000")
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, SYMBOL, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    price_path.on_price(deps, EX, SYMBOL)  # the first run: the band, the venue's rules
    return deps, pid


def test_a_stop_move_is_two_transactions_of_few_statements(sim, trailing_position, redis_client):
    deps, pid = trailing_position
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))
    with counted_statements() as sent:
        price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 1
    with unit_of_work() as s:
        assert s.get(TrailingStop, pid).highest_price == Decimal("61800")
    assert sent.count("COMMIT") == 2, sent  # the decision with its intent; the accepted move
    # the first: the position with its token, trailing row and stop rows, the intent; the
    # second: the trailing row, the new stop open, the fenced stop price, the events, the old stop
    assert len(sent) <= 9, sent


def test_a_stop_move_is_few_redis_round_trips(sim, trailing_position, redis_client, monkeypatch):
    deps, pid = trailing_position
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))
    # an extend right after the lock's confirmation does not ask Redis; how right-after is a
    # matter of this machine's load, not of the count: the lock's whole renewal interval here
    monkeypatch.setattr(locks, "RECENTLY_CONFIRMED_S", 10.0)
    with counted_round_trips(monkeypatch) as sent:
        price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 1
    # the window with the lock and the settings' version (one script), the band (published
    # and read back in one round trip), the window's end with the lock's release (one
    # script); outside a task the lock wait and tick-to-order metrics go at once. No extend
    # of a lock taken a moment before.
    assert len(sent) <= 5, sent


def stop_ids(pid: int) -> list[tuple[str, str]]:
    with unit_of_work() as s:
        rows = s.execute(
            select(Order.client_order_id, Order.status)
            .where(Order.position_id == pid, Order.purpose == "stop")
            .order_by(Order.id)
        )
        return [(cid, status) for cid, status in rows]


def test_a_move_reads_the_same_few_stop_rows_however_long_the_position_trailed(
    sim, trailing_position, redis_client, monkeypatch
):
    """Each move leaves a ledger row; the next move needs only the newest and the open ones
    (reading them all made every move slower the longer a position trailed)."""
    deps, pid = trailing_position
    carried: list[int] = []
    preload = stop_rows.preload
    monkeypatch.setattr(
        stop_rows, "preload", lambda s, p, rows: carried.append(len(rows)) or preload(s, p, rows)
    )
    for step in range(12):
        price = Decimal(61800 + 900 * step)
        sim.set_price(SYMBOL, str(price))
        tick_leaves_band(redis_client, price)
        price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 12
    ids = stop_ids(pid)
    assert len(ids) == 13 and len({cid for cid, _ in ids}) == 13  # the opening stop, 12 moves
    assert [status for _, status in ids].count("open") == 1
    assert max(carried) <= 2, carried  # the newest stop (open) and at most one other open


def test_the_newest_stop_is_the_highest_sequence_not_the_last_row(
    sim, trailing_position, redis_client
):
    """An unfinished intent with the highest sequence is reused even when a stop of a lower
    sequence was recorded after it (a reclaim records a live stop it finds), and another
    position's stops of higher sequences do not count."""
    deps, pid = trailing_position
    with unit_of_work() as s:
        other = create_position(s, NewPosition(EX, "ETHUSDT", "long"))  # a longer history
        position = s.get(Position, pid)
        base = dict(exchange=EX, symbol=SYMBOL, purpose="stop", side="sell")
        base.update(order_type="stop_market", quantity=position.quantity)
        ahead = client_order_id(pid, position.correlation_id, "stop", 7)
        behind = client_order_id(pid, position.correlation_id, "stop", 3)
        elsewhere = client_order_id(other.id, other.correlation_id, "stop", 50)
        record_order(s, other.id, client_order_id=elsewhere, status="intent", **base)
        record_order(s, pid, client_order_id=ahead, status="intent", **base)
    with unit_of_work() as s:
        record_order(s, pid, client_order_id=behind, status="intent", **base)
    with unit_of_work() as s:
        record_order(s, pid, client_order_id=behind, status="cancelled", **base)
    sim.set_price(SYMBOL, "61800")
    tick_leaves_band(redis_client, Decimal("61800"))
    price_path.on_price(deps, EX, SYMBOL)
    assert moves(pid) == 1
    assert (ahead, "open") in stop_ids(pid)  # the intent of sequence 7 was sent, not a new 4


def test_the_newest_stop_is_found_through_its_index(trailing_position):
    """The newest stop's subquery and ``ix_orders_position_stop_seq`` share one expression, so
    PostgreSQL reads the newest stop from the index, not every stop of the position."""
    _deps, pid = trailing_position
    with unit_of_work() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))
        query = stop_rows._statement().params(stops_of=pid)
        sql = query.compile(dialect=s.bind.dialect, compile_kwargs={"literal_binds": True})
        plan = s.execute(text(f"EXPLAIN {sql}")).scalars()
        assert "Index Scan Backward using ix_orders_position_stop_seq" in "\n".join(plan)
