"""The next holder cleans up after a dead one (real Redis, PostgreSQL, paper exchange).

A run killed between sending a stop and recording it leaves an ``intent`` row and maybe a
live second stop. The first price run after it (even one that decides no move) adopts
that stop and cancels the old one, or leaves an intent the exchange never saw alone.
"""

from decimal import Decimal

import pytest
from sqlalchemy import select

from core.db.models import Event, Order, Position, TrailingStop
from core.db.session import unit_of_work
from core.dead_runs import dead_run_pending, start_run
from core.exchange.client_ids import client_order_id
from core.locks import lock_key
from core.services import price_path
from core.services.opening import OpenOutcome, open_position
from core.services.positions import (
    NewPosition,
    create_position,
    order_row,
    record_order,
    set_order_status,
)

pytestmark = pytest.mark.integration
EX = "binance"


def opened(deps, symbol="BTCUSDT") -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(EX, symbol, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def dead_move(deps, pid, trigger: Decimal, *, sent: bool, sent_at: Decimal | None = None) -> str:
    """What a run killed mid-move leaves: its intent, maybe its stop (at ``sent_at`` when
    the send moved it beyond the mark), its run marker."""
    with unit_of_work() as s:
        position = s.get(Position, pid)
        cid = client_order_id(pid, position.correlation_id, "stop", 1)
        record_order(
            s,
            position,
            exchange=EX,
            symbol=position.symbol,
            client_order_id=cid,
            purpose="stop",
            side="sell",
            order_type="stop_market",
            quantity=position.quantity,
            status="intent",
            trigger_price=trigger,
            reduce_only=True,
        )
        quantity, symbol = position.quantity, position.symbol
    if sent:
        deps.exchange.create_stop(symbol, "sell", quantity, sent_at or trigger, cid)
    start_run(deps.redis, lock_key(EX, symbol), "a-run-that-was-killed")
    return cid


def live_triggers(sim, symbol="BTCUSDT"):
    return sorted(
        Decimal(o["triggerPrice"]) for o in sim.state()["open_algo_orders"] if o["symbol"] == symbol
    )


def ledger(pid):
    with unit_of_work() as s:
        return {
            o.client_order_id: o.status
            for o in s.scalars(
                select(Order).where(Order.purpose == "stop", Order.position_id == pid)
            )
        }


def test_the_dead_runs_live_stop_is_adopted_and_the_old_one_cancelled_without_a_move(sim, deps):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    [old] = live_triggers(sim)
    cid = dead_move(deps, pid, Decimal("59500"), sent=True)
    assert len(live_triggers(sim)) == 2  # the two stops the dead run left
    assert deps.redis.exists(lock_key(EX, "BTCUSDT") + ":run")  # its run never ended

    price_path.on_price(deps, EX, "BTCUSDT")  # same price: trailing decides nothing

    assert live_triggers(sim) == [Decimal("59500")]
    statuses = ledger(pid)
    assert statuses[cid] == "open" and sorted(statuses.values()) == ["cancelled", "open"]
    with unit_of_work() as s:
        assert s.get(Position, pid).stop_price == Decimal("59500") != old
        assert s.get(TrailingStop, pid).current_stop == Decimal("59500")
        reasons = [
            e.data.get("reason")
            for e in s.scalars(select(Event).where(Event.type == "trailing_stop_updated"))
        ]
    assert "adopted the stop of a run that died mid-move" in reasons
    assert not dead_run_pending(deps.redis, lock_key(EX, "BTCUSDT"))


def test_an_intent_the_exchange_never_saw_stays_an_intent_and_nothing_is_cancelled(sim, deps):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    [old] = live_triggers(sim)
    cid = dead_move(deps, pid, Decimal("59500"), sent=False)

    price_path.on_price(deps, EX, "BTCUSDT")

    assert live_triggers(sim) == [old]
    assert ledger(pid)[cid] == "intent"  # the next move sends this very client id
    assert not dead_run_pending(deps.redis, lock_key(EX, "BTCUSDT"))


def test_a_run_that_ended_normally_leaves_no_dead_run_mark(sim, deps):
    sim.set_price("BTCUSDT", "60000")
    opened(deps)
    price_path.on_price(deps, EX, "BTCUSDT")
    assert not dead_run_pending(deps.redis, lock_key(EX, "BTCUSDT"))
    assert not deps.redis.exists(lock_key(EX, "BTCUSDT") + ":run")


def test_the_adopted_row_keeps_the_trigger_price_the_venue_holds(sim, deps):
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    cid = dead_move(deps, pid, Decimal("59500"), sent=True, sent_at=Decimal("59400"))

    price_path.on_price(deps, EX, "BTCUSDT")

    assert live_triggers(sim) == [Decimal("59400")]
    with unit_of_work() as s:
        row = order_row(s, cid)
        assert row.status == "open" and row.exchange_order_id is not None
        assert row.trigger_price == Decimal("59400")  # not the 59500 the intent recorded
        assert s.get(Position, pid).stop_price == Decimal("59400")


def test_a_row_another_path_ended_meanwhile_is_not_moved_back_and_nothing_is_adopted(
    sim, deps, monkeypatch
):
    """The dead run's stop fires between its lookup and the adoption; the fill reaches the
    ledger first (the user-data stream). The adoption must not make it ``open`` again."""
    sim.set_price("BTCUSDT", "60000")
    pid = opened(deps)
    with unit_of_work() as s:
        old_stop = s.get(Position, pid).stop_price
    cid = dead_move(deps, pid, Decimal("59500"), sent=True)
    lookup = deps.exchange.fetch_order

    def lookup_then_the_fill_arrives(symbol, client_id, **kwargs):
        found = lookup(symbol, client_id, **kwargs)
        if client_id == cid:
            with unit_of_work() as s:
                set_order_status(s, cid, "filled")
        return found

    monkeypatch.setattr(deps.exchange, "fetch_order", lookup_then_the_fill_arrives)

    price_path.on_price(deps, EX, "BTCUSDT")

    with unit_of_work() as s:
        assert order_row(s, cid).status == "filled"
        assert s.get(Position, pid).stop_price == old_stop
        assert s.get(TrailingStop, pid).current_stop == old_stop
        events = list(s.scalars(select(Event).where(Event.order_id == cid)))
    refused = [e for e in events if e.type == "order_status_move_refused"]
    assert [(e.data["from_status"], e.data["to_status"]) for e in refused] == [("filled", "open")]
    assert not [e for e in events if e.type == "trailing_stop_updated"]
