"""The request log and Binance's per-IP weight accounting.

Tests assert on it ("a protection cycle costs a constant number of calls"), so every
/fapi request is recorded with method, path, weight and time, with a monotonically
increasing index so a reader can ask for everything since the index it last saw.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

#: Request weight per (method, endpoint) as Binance USD-M publishes it:
#: (weight with symbol, weight without symbol).
WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "v1/ping"): (1, 1),
    ("GET", "v1/time"): (1, 1),
    ("GET", "v1/exchangeInfo"): (1, 1),
    ("GET", "v1/premiumIndex"): (1, 10),
    ("GET", "v1/ticker/24hr"): (1, 40),
    ("GET", "v1/ticker/price"): (1, 2),
    ("GET", "v2/ticker/price"): (1, 2),
    ("GET", "v1/ticker/bookTicker"): (2, 5),
    ("GET", "v1/depth"): (2, 2),
    ("GET", "v1/leverageBracket"): (1, 1),
    ("GET", "v1/commissionRate"): (20, 20),
    ("GET", "v2/account"): (5, 5),
    ("GET", "v3/account"): (5, 5),
    ("GET", "v2/balance"): (5, 5),
    ("GET", "v3/balance"): (5, 5),
    ("GET", "v2/positionRisk"): (5, 5),
    ("GET", "v3/positionRisk"): (5, 5),
    ("GET", "v1/positionSide/dual"): (30, 30),
    ("POST", "v1/positionSide/dual"): (1, 1),
    ("POST", "v1/leverage"): (1, 1),
    ("POST", "v1/marginType"): (1, 1),
    ("POST", "v1/order"): (0, 0),
    ("GET", "v1/order"): (1, 1),
    ("DELETE", "v1/order"): (1, 1),
    ("GET", "v1/openOrder"): (1, 1),
    ("GET", "v1/openOrders"): (1, 40),
    ("GET", "v1/allOrders"): (5, 5),
    ("DELETE", "v1/allOpenOrders"): (1, 1),
    ("GET", "v1/userTrades"): (5, 5),
    ("POST", "v1/algoOrder"): (0, 0),
    ("GET", "v1/algoOrder"): (1, 1),
    ("DELETE", "v1/algoOrder"): (1, 1),
    ("GET", "v1/openAlgoOrders"): (1, 40),
    ("GET", "v1/allAlgoOrders"): (5, 5),
    ("DELETE", "v1/algoOpenOrders"): (1, 1),
    ("POST", "v1/listenKey"): (1, 1),
    ("PUT", "v1/listenKey"): (1, 1),
    ("DELETE", "v1/listenKey"): (1, 1),
}
ORDER_ENDPOINTS = frozenset({("POST", "v1/order"), ("POST", "v1/algoOrder")})
WINDOW_MS = 60_000
MAX_ENTRIES = 100_000


def endpoint_key(method: str, path: str) -> tuple[str, str]:
    """('GET', '/fapi/v1/order') -> ('GET', 'v1/order')."""
    return method, path.removeprefix("/fapi/")


def weight_of(method: str, path: str, has_symbol: bool) -> int:
    with_symbol, without = WEIGHTS.get(endpoint_key(method, path), (1, 1))
    return with_symbol if has_symbol else without


@dataclass
class LoggedRequest:
    index: int
    method: str
    path: str
    weight: int
    time: int
    status: int = 0
    code: int | None = None
    fault: str | None = None


class RequestLog:
    """Append-only (bounded) log plus the sliding one-minute weight and order counters.

    The minute's weight is kept as a running total (added on record, taken off as entries
    leave the window): every request reads it twice (the limit check and the response
    header), and summing the window each time cost more the busier the minute was.
    """

    def __init__(self) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=MAX_ENTRIES)
        self._next = 0
        self._weights: deque[tuple[int, int]] = deque()
        self._weight_in_window = 0
        self._orders: deque[int] = deque()

    def record(self, method: str, path: str, weight: int) -> LoggedRequest:
        now = int(time.time() * 1000)
        entry = LoggedRequest(self._next, method, path, weight, now)
        self._next += 1
        self._entries.append(entry)
        self._weights.append((now, weight))
        self._weight_in_window += weight
        if endpoint_key(method, path) in ORDER_ENDPOINTS:
            self._orders.append(now)
        return entry

    def used_weight(self) -> int:
        self._expire()
        return self._weight_in_window

    def order_count(self) -> int:
        self._expire()
        return len(self._orders)

    def _expire(self) -> None:
        horizon = int(time.time() * 1000) - WINDOW_MS
        while self._weights and self._weights[0][0] < horizon:
            self._weight_in_window -= self._weights.popleft()[1]
        while self._orders and self._orders[0] < horizon:
            self._orders.popleft()

    def since(self, index: int) -> dict[str, object]:
        entries = [asdict(e) for e in self._entries if e.index >= index]
        return {"next": self._next, "requests": entries}

    def clear(self) -> None:
        """Forget entries and weights; indexes keep growing so readers never go back."""
        self._entries.clear()
        self._weights.clear()
        self._weight_in_window = 0
        self._orders.clear()
