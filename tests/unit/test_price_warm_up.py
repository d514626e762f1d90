"""Which venues a worker warms price threads for, and whose connections it keeps: only a
worker on a ``stops`` queue, only its venues (VIGIL_VENUE_QUEUES isolates the others)."""

from core.config import load_settings
from core.db import session
from tasks.routing import price_venues_of


def test_a_worker_warms_only_the_venues_whose_price_tasks_it_takes():
    both = load_settings(exchanges=["binance", "bybit"])
    assert price_venues_of(["stops", "orders"], both) == ["binance", "bybit"]
    assert price_venues_of(["orders", "signals", "maintenance"], both) == []
    isolated = load_settings(exchanges=["binance", "bybit"], venue_queues=["bybit"])
    assert price_venues_of(["stops"], isolated) == ["binance"]
    assert price_venues_of(["stops.bybit", "orders.bybit"], isolated) == ["bybit"]
    assert price_venues_of(["stops.kraken"], isolated) == []  # not a configured venue


def test_only_a_process_that_runs_price_batches_keeps_a_connection_per_thread(monkeypatch):
    monkeypatch.setattr(session, "_extra_connections", 0)
    assert session.pool_size() == session.BASE_POOL_SIZE
    session.keep_connections_for(16)
    assert session.pool_size() == session.BASE_POOL_SIZE + 16
