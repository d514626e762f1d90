"""Routing at the ingest: a signal for a venue this deployment does not trade is rejected at
once (``signal_rejected``, reason ``venue_not_configured``), never stored to expire later."""

from __future__ import annotations

import pytest

from tests.integration.test_ingest_signals import events, signals, stamp, wait_until
from tests.integration.test_ingest_signals import ingest as ingest  # noqa: F401
from tests.integration.test_ingest_signals import source as source  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_signal_for_a_venue_not_configured_is_rejected_at_the_ingest(source, ingest):
    running = ingest()  # a Binance deployment (the default venue)
    source.emit(
        signals=[
            {"id": "by-1", "symbol": "BTCUSDT", "exchange": "bybit", "timestamp": stamp()},
            {"id": "bn-1", "symbol": "BTCUSDT", "exchange": "binance", "timestamp": stamp()},
        ],
        batch=True,
    )
    wait_until(lambda: running.ctx.status.frames == 1, what="the frame")
    assert list(signals()) == ["bn-1"]  # the Bybit signal never reaches a wave
    [rejected] = events("signal_rejected")
    assert rejected.data["reason"] == "venue_not_configured"
    assert rejected.data["signal_id"] == "by-1"
    assert "bybit is not a venue of this deployment (binance)" in rejected.data["detail"]


def test_both_venues_configured_store_both(source, ingest):
    running = ingest(exchanges="binance,bybit")
    source.emit(
        signals=[
            {"id": "by-1", "symbol": "BTCUSDT", "exchange": "bybit", "timestamp": stamp()},
            {"id": "bn-1", "symbol": "BTCUSDT", "exchange": "binance", "timestamp": stamp()},
        ],
        batch=True,
    )
    wait_until(lambda: running.ctx.status.frames == 1, what="the frame")
    rows = signals()
    assert sorted(rows) == ["bn-1", "by-1"]
    assert {rows["by-1"].exchange, rows["bn-1"].exchange} == {"bybit", "binance"}
    assert events("signal_rejected") == []
