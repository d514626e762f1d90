"""The knobs of the Bybit dialect of the paper exchange.

Why apart from the engine (sim/bybit/engine.py): they are configuration, not account state.
The server's state (sim/bybit/state.py) keeps one ``BybitSettings`` across account resets,
admin ``POST /_sim/config`` changes them at runtime, and the engine and its conditional
orders (sim/bybit/conditional.py) read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BybitSettings:
    """Knobs of the Bybit dialect (admin `POST /_sim/config` changes them at runtime)."""

    #: How long a freshly opened position stays out of the position list (0: at once).
    position_delay_ms: int = 200
    #: Order endpoints (create/amend/cancel/cancel-all/trading-stop) per second per UID,
    #: each endpoint counted on its own, as Bybit does; None switches the limit off.
    order_rate_limit: int | None = 10
    #: Closed orders `/v5/order/realtime` still returns by id (the rest: order history).
    realtime_closed_window: int = 500
    #: Send `retCode` as a string ("0", "10006"): some Bybit gateways did, and the old bot
    #: broke on it; off by default (v5 sends numbers).
    retcode_as_string: bool = False
    #: Untriggered conditional orders allowed per symbol.
    max_stop_orders: int = 10
