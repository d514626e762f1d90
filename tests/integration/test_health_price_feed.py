"""/health's ``price_feed``: fails when positions are open and the ingest's heartbeat says no
mark price arrived within VIGIL_PRICE_FEED_STALE_SECONDS; read afresh on every check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.clock import ManualClock
from core.config import load_settings
from core.db.session import unit_of_work
from core.services import heartbeat
from core.services.health import FAIL, OK, HealthChecker
from core.services.positions import NewPosition, create_position

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def checker() -> HealthChecker:
    settings = load_settings(price_feed_stale_seconds=10)
    return HealthChecker(
        settings, ManualClock(NOW), lambda: None, None, None, exchange_name="binance"
    )


def beat_with_tick(age_seconds: float | None) -> None:
    tick = None if age_seconds is None else (NOW - timedelta(seconds=age_seconds)).isoformat()
    with unit_of_work() as s:
        heartbeat.beat(s, "ingest:binance", NOW, last_tick_at=tick)


def open_position() -> None:
    with unit_of_work() as s:
        create_position(s, NewPosition("binance", "BTCUSDT", "long"))  # pending_entry: open


def test_without_open_positions_a_quiet_feed_is_fine(clean_db):
    beat_with_tick(600)
    assert checker().price_feed().status == OK


def test_with_an_open_position_a_quiet_feed_fails_and_a_fresh_one_recovers(clean_db):
    open_position()
    beat_with_tick(None)
    assert checker().price_feed().status == FAIL
    beat_with_tick(11)
    found = checker().price_feed()
    assert found.status == FAIL and found.detail["last_tick_age_seconds"] == 11
    beat_with_tick(3)
    assert checker().price_feed().status == OK  # nothing sticky: the next check tells


def test_without_any_ingest_heartbeat_the_feed_is_not_configured(clean_db):
    open_position()
    assert checker().price_feed().status == "not_configured"
