"""Which markets the Bybit mark-price stream subscribes: active linear USDT perpetuals."""

from core.exchange.streams import linear_usdt_symbols


def test_only_active_linear_usdt_perpetuals_are_watched():
    markets = {
        "BTC/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT", "active": True},
        "ETH/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT"},
        "LUNA/USDT:USDT": {"swap": True, "linear": True, "settle": "USDT", "active": False},
        "BTC/USDC:USDC": {"swap": True, "linear": True, "settle": "USDC", "active": True},
        "BTC/USD:BTC": {"swap": True, "linear": False, "settle": "BTC", "active": True},
        "BTC/USDT": {"spot": True, "settle": None, "active": True},
    }
    assert linear_usdt_symbols(markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
