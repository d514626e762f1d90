"""Bybit v5 WebSocket streams of the paper exchange, as ccxt.pro's `bybit` speaks them.

* public `/v5/public/linear`: `{"op": "subscribe", "args": ["tickers.BTCUSDT"]}`; a
  `snapshot` right after the subscription, then a `delta` (mark, index and last price) on
  every price tick;
* private `/v5/private`: `{"op": "auth", "args": [key, expires, signature]}` first, then
  topics `order`, `execution`, `position`, `wallet`, pushed as
  `{"id", "topic", "creationTime", "data": [...]}` on every account change (a stop that
  fires shows up as `order` rows `Triggered` then `Filled`, same `orderId`);
* `{"op": "ping"}` answers `pong` on both.

The connection plumbing (one bounded queue and sender task per connection, dropping the
oldest frames for a slow reader) is the Binance hub's; only the protocol differs.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from sim.bybit.market_data import ticker_delta, ticker_row
from sim.bybit.state import BybitState
from sim.ws import Connection, StreamHub

PRIVATE_TOPICS = frozenset({"order", "execution", "position", "wallet"})


@dataclass(eq=False)
class BybitConnection(Connection):
    private: bool = False
    conn_id: str = ""
    authed: bool = False
    ticks: dict[str, int] = field(default_factory=dict)  # topic -> cross sequence


def _frame(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"))


class BybitStreamHub(StreamHub):
    """Fans ticker deltas and private account topics out to subscribed connections."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    # -- fan-out --------------------------------------------------------------------

    def publish_topic(self, topic: str, rows: list[dict[str, object]]) -> None:
        """An account change for the private topic `topic` (called by the engine)."""
        payload: str | None = None
        for conn in self.connections:
            if not isinstance(conn, BybitConnection) or not conn.authed:
                continue
            if topic not in conn.streams and f"{topic}.linear" not in conn.streams:
                continue
            if payload is None:
                payload = _frame(
                    {
                        "id": f"sim-{next(self._ids)}",
                        "topic": topic,
                        "creationTime": int(time.time() * 1000),
                        "data": rows,
                    }
                )
            conn.push(payload)

    def publish_marks(self, prices: dict[str, Decimal]) -> None:
        now = int(time.time() * 1000)
        for conn in self.connections:
            if not isinstance(conn, BybitConnection) or conn.private:
                continue
            for topic in conn.streams.values():
                symbol = topic.split(".", 1)[1]
                if symbol not in prices:
                    continue
                conn.ticks[topic] = conn.ticks.get(topic, 0) + 1
                frame = {
                    "topic": topic,
                    "type": "delta",
                    "data": ticker_delta(symbol, prices[symbol]),
                    "cs": conn.ticks[topic],
                    "ts": now,
                }
                conn.push(_frame(frame))

    # -- connections ----------------------------------------------------------------

    async def serve_v5(
        self, request: web.Request, state: BybitState, *, private: bool
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = BybitConnection(ws=ws, combined=False, private=private)
        conn.conn_id = f"sim-conn-{next(self._ids)}"
        await self._converse(conn, ws, lambda text: self._op(conn, state, text))
        return ws

    def _op(self, conn: BybitConnection, state: BybitState, text: str) -> Iterator[str]:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            yield self._reply(conn, "", None, False, "error:request not json")
            return
        op, req_id, args = message.get("op", ""), message.get("req_id"), message.get("args")
        if op == "ping":
            yield self._reply(conn, "ping", req_id, True, "pong")
        elif op == "auth" and conn.private:
            conn.authed = state.bybit_auth.check_ws(args)
            message = "" if conn.authed else "error:signature verification failed"
            yield self._reply(conn, "auth", req_id, conn.authed, message)
        elif op in ("subscribe", "unsubscribe") and isinstance(args, list):
            yield from self._subscribe(conn, state, op, req_id, [str(a) for a in args])
        else:
            yield self._reply(conn, str(op), req_id, False, f"error:unknown op {op}")

    def _subscribe(
        self,
        conn: BybitConnection,
        state: BybitState,
        op: str,
        req_id: object,
        topics: list[str],
    ) -> Iterator[str]:
        if conn.private and not conn.authed:
            yield self._reply(conn, op, req_id, False, "Request not authorized")
            return
        bad = [t for t in topics if not self._known(conn, state, t)]
        if bad:
            yield self._reply(conn, op, req_id, False, f"error:handler not found,topic:{bad[0]}")
            return
        if op == "unsubscribe":
            for topic in topics:
                conn.streams.pop(topic, None)
            yield self._reply(conn, op, req_id, True, "")
            return
        conn.streams.update({t: t for t in topics})
        yield self._reply(conn, op, req_id, True, "")
        for topic in topics if not conn.private else ():
            symbol = topic.split(".", 1)[1]
            row = ticker_row(state.markets[symbol], state.prices.prices[symbol])
            now = int(time.time() * 1000)
            conn.ticks[topic] = 1
            yield _frame({"topic": topic, "type": "snapshot", "data": row, "cs": 1, "ts": now})

    @staticmethod
    def _known(conn: BybitConnection, state: BybitState, topic: str) -> bool:
        if conn.private:
            return topic.split(".", 1)[0] in PRIVATE_TOPICS
        kind, _, symbol = topic.partition(".")
        return kind == "tickers" and symbol in state.markets

    @staticmethod
    def _reply(conn: BybitConnection, op: str, req_id: object, success: bool, msg: str) -> str:
        reply: dict[str, object] = {
            "success": success,
            "ret_msg": msg,
            "conn_id": conn.conn_id,
            "op": op,
        }
        if req_id is not None:
            reply["req_id"] = req_id
        if op == "auth" and not success:
            reply["request"] = {"op": "auth"}  # what ccxt.pro reads to say "authentication"
        return _frame(reply)
