from decimal import Decimal

import pytest

from core.exchange.adapter import ExchangeAdapter
from shell.harness.protection_monitor import ProtectionMonitor

pytestmark = pytest.mark.integration


def test_monitor_sees_an_unprotected_position_until_its_stop_arrives(sim, paper_exchange):
    adapter = ExchangeAdapter(paper_exchange)
    monitor = ProtectionMonitor(adapter, lambda symbol: "active", interval=0.05)
    adapter.create_market_order("BTCUSDT", "buy", Decimal("0.01"), "hand-1")
    monitor.sample()
    assert set(monitor.current_gaps()) == {"BTCUSDT"}
    adapter.create_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("50000"), "hand-2")
    monitor.sample()
    assert monitor.current_gaps() == {}
    [gap] = monitor.report.gaps
    assert gap.kind == "established" and gap.ended is not None


def test_a_partial_stop_does_not_count_and_opening_gaps_are_labelled(sim, paper_exchange):
    adapter = ExchangeAdapter(paper_exchange)
    monitor = ProtectionMonitor(adapter, lambda symbol: "pending_sl", interval=0.05)
    adapter.create_market_order("ETHUSDT", "buy", Decimal("0.2"), "hand-1")
    adapter.create_stop("ETHUSDT", "sell", Decimal("0.1"), Decimal("2000"), "hand-2")
    monitor.start()
    import time

    deadline = time.monotonic() + 10
    while not monitor.report.samples and time.monotonic() < deadline:
        time.sleep(0.02)
    report = monitor.stop()
    assert [g.kind for g in report.gaps] == ["opening"]
    assert report.longest("established") == 0.0
