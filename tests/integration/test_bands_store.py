from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.domain.bands import PriceBand
from core.services import bands

pytestmark = pytest.mark.integration


def test_components_intersect_and_removal_untracks(redis_client):
    until = datetime(2026, 1, 1, tzinfo=UTC)
    bands.publish(
        redis_client,
        "binance",
        "BTCUSDT",
        "trailing",
        PriceBand(Decimal("59000"), Decimal("61000")),
    )
    bands.publish(
        redis_client, "binance", "BTCUSDT", "aged", PriceBand(None, Decimal("60500"), until)
    )
    band = bands.combined(redis_client, "binance", "BTCUSDT")
    assert band == PriceBand(Decimal("59000"), Decimal("60500"), until)
    assert bands.tracked_symbols(redis_client, "binance") == ["BTCUSDT"]
    bands.publish(redis_client, "binance", "BTCUSDT", "trailing", None)
    bands.publish(redis_client, "binance", "BTCUSDT", "aged", None)
    assert bands.combined(redis_client, "binance", "BTCUSDT") is None
    assert bands.tracked_symbols(redis_client, "binance") == []


def test_changes_are_announced_per_exchange(redis_client):
    sub = redis_client.pubsub()
    sub.subscribe(bands.channel("binance"))
    sub.get_message(timeout=1)
    bands.publish(redis_client, "binance", "ETHUSDT", "trailing", PriceBand.empty())
    message = sub.get_message(timeout=2)
    assert message["data"] == b"ETHUSDT"
    sub.close()
