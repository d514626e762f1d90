"""Pure parts of the price path: which order updates are stop fills, fill dedup, the
trailing parameters taken from settings, the task's window type."""

from datetime import timedelta
from decimal import Decimal

import pytest

from core.config import load_settings
from core.ingest.prices import FillDedup, filled_stop_position
from core.services.price_path import TickWindow
from core.services.trailing import trailing_params


def update(cid, status, raw_status, algo=False):
    info = {"X": raw_status, **({"aid": 7} if algo else {})}
    return {"clientOrderId": cid, "status": status, "info": info}


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (update("v12-abc-s3", "closed", "FINISHED", algo=True), 12),  # algo stop executed
        (update("v12-abc-s3", "closed", "FILLED"), 12),  # the market order it became
        (update("v12-abc-p0", "closed", "FILLED"), 12),  # protection's stop
        (update("v12-abc-x0", "closed", "FILLED"), 12),  # the emergency stop
        (update("v12-abc-s3", "closed", "TRIGGERED", algo=True), None),  # not filled yet
        (update("v12-abc-s3", "open", "NEW", algo=True), None),
        (update("v12-abc-s3", "canceled", "CANCELED", algo=True), None),
        (update("v12-abc-s3", "expired", "EXPIRED", algo=True), None),
        (update("v12-abc-e0", "closed", "FILLED"), None),  # our entry, not a stop
        (update("v12-abc-c0", "closed", "FILLED"), None),  # our close
        (update("by-hand-1", "closed", "FILLED"), None),  # not ours
        ({"status": "closed", "info": {}}, None),
    ],
)
def test_only_our_filled_stops_are_stop_fills(order, expected):
    assert filled_stop_position(order) == expected


def test_a_fill_seen_twice_is_settled_once_per_window():
    dedup = FillDedup(window_s=30)
    assert dedup.first(5) is True
    assert dedup.first(5) is False
    assert dedup.first(6) is True
    assert FillDedup(window_s=0).first(5) and FillDedup(window_s=0).first(5)


def test_trailing_parameters_come_from_the_settings():
    settings = load_settings(
        trailing_activation_percent="2",
        trailing_callback_percent="0.7",
        trailing_breakeven_percent="1",
        trailing_time_activation_minutes=30,
        trailing_min_update_interval=3,
        trailing_min_distance_percent="0.2",
        taker_fee_percent="0.04",
    )
    params = trailing_params(settings)
    assert params.activation_pct == Decimal(2) and params.callback_pct == Decimal("0.7")
    assert params.breakeven_at_pct == Decimal(1) and params.taker_fee_pct == Decimal("0.04")
    assert params.time_activation_after == timedelta(minutes=30)
    assert params.min_update_interval == timedelta(seconds=3)
    assert params.min_distance_pct == Decimal("0.2")
    assert trailing_params(load_settings()).time_activation_after is None


def test_tick_window_is_a_price_window_and_keeps_its_invariant():
    window = TickWindow(Decimal(3), Decimal(1), Decimal(2), None, 4)
    assert (window.high, window.low, window.last, window.ticks) == (3, 1, 2, 4)
    assert TickWindow.at(Decimal(5)).ticks == 0
    with pytest.raises(ValueError):
        TickWindow(Decimal(1), Decimal(2), Decimal(2))
