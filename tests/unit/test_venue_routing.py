"""Which queue a task goes to when a venue has workers of its own (VIGIL_VENUE_QUEUES)."""

import pytest

from core import task_names as names
from core.queues import venue_queues
from tasks.routing import queue_for, shared_queue

POSITIONS = {1: "binance", 2: "bybit"}
WAVES = {10: "bybit"}
LOOKUPS = {"position": POSITIONS.get, "wave": WAVES.get}


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "queue"),
    [
        (names.ON_PRICE, ["bybit", "BTCUSDT"], {}, "stops.bybit"),
        (names.ON_PRICE, [], {"exchange": "bybit", "symbol": "BTCUSDT"}, "stops.bybit"),
        (names.ON_PRICE, ["binance", "BTCUSDT"], {}, "stops"),
        (names.ON_PRICES, ["bybit", ["BTCUSDT", "ETHUSDT"]], {}, "stops.bybit"),
        (names.ON_PRICES, ["binance", ["BTCUSDT", "ETHUSDT"]], {}, "stops"),
        (names.OPEN_POSITION, [2], {}, "orders.bybit"),
        (names.OPEN_POSITION, [1], {}, "orders"),
        (names.OPEN_POSITION, [99], {}, "orders"),  # no such position: the shared queue
        (names.SETTLE_CLOSE, [], {"position_id": 2, "reason": "stop_triggered"}, "orders.bybit"),
        (names.PROCESS_WAVE, [10], {}, "signals.bybit"),
        (names.ADVANCE_WAVE, ["10"], {}, "signals.bybit"),
        (names.TRAILING_SWEEP, [], {}, "stops"),  # covers every venue
        (names.PROTECTION_CHECK, [], {}, "maintenance"),  # guardians stay shared
        (names.OPEN_POSITION, ["not-a-number"], {}, "orders"),
    ],
)
def test_a_venue_with_its_own_queues_gets_its_tasks_there(name, args, kwargs, queue):
    assert queue_for(name, args, kwargs, ["bybit"], LOOKUPS) == queue


def test_without_venue_queues_nothing_is_looked_up_and_every_task_keeps_its_queue():
    def refuse(_: int) -> str:
        raise AssertionError("looked up")

    lookups = {"position": refuse, "wave": refuse}
    assert queue_for(names.OPEN_POSITION, [2], {}, [], lookups) == "orders"
    assert queue_for(names.ON_PRICE, ["bybit", "X"], {}, [], lookups) == "stops"
    assert queue_for(names.PROCESS_WAVE, [10], {}, [], lookups) == "signals"


def test_names_outside_the_engine_have_no_queue_of_their_own():
    assert shared_queue("celery.backend_cleanup") is None
    assert shared_queue("vigil.nowhere.task") is None
    assert venue_queues("bybit") == ["signals.bybit", "orders.bybit", "stops.bybit"]
