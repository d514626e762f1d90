"""WebSocket streams of the paper exchange: mark prices and the user data stream.

Accepted URL forms (all on the server's one port):

* raw streams: `/ws/<stream>`, `/ws/<a>/<b>`, and ccxt.pro's linear rewrite
  `/market/ws/<n>` / `/public/ws/<n>` followed by a JSON `SUBSCRIBE`;
* combined streams: `/stream?streams=a/b` (also `/market/stream?...`), frames wrapped as
  `{"stream": name, "data": event}`;
* user data: `/ws/<listenKey>` or `/private/ws?listenKey=<key>` (ccxt.pro's form).

Streams: `<symbol>@markPrice`, `<symbol>@markPrice@1s`, `!markPrice@arr`,
`!markPrice@arr@1s`; every one of them is pushed on each price tick (`tick_interval`,
1 s by default, down to 100 ms). Each connection has its own bounded queue and sender
task, so one slow reader never delays the others; when its queue is full, the oldest
frames are dropped (counted in `dropped`), as a real exchange drops slow consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import WSMsgType, web

from sim.orders import fmt

log = logging.getLogger(__name__)
QUEUE_SIZE = 20_000
MARK_SUFFIXES = ("@markprice", "@markprice@1s")
ALL_MARKS = ("!markprice@arr", "!markprice@arr@1s")


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    combined: bool
    streams: dict[str, str] = field(default_factory=dict)  # lowercase -> as subscribed
    listen_key: str | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: int = 0
    sent: int = 0

    def push(self, frame: str) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(frame)

    def wrap(self, stream: str, payload: str) -> str:
        if not self.combined:
            return payload
        return f'{{"stream":{json.dumps(stream)},"data":{payload}}}'


class StreamHub:
    """Fans prices and user events out to every connection that asked for them."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()

    # -- fan-out --------------------------------------------------------------------

    def publish_user(self, event: dict[str, object]) -> None:
        payload: str | None = None
        for conn in self.connections:
            if conn.listen_key is None:
                continue
            payload = payload or json.dumps(event, separators=(",", ":"))
            conn.push(conn.wrap(conn.listen_key, payload))

    def publish_marks(self, prices: dict[str, Decimal]) -> None:
        if not any(c.streams for c in self.connections):
            return
        now = int(time.time() * 1000)
        next_funding = (now // 28_800_000 + 1) * 28_800_000
        events: dict[str, str] = {}
        for conn in self.connections:
            for lowered, name in conn.streams.items():
                payload = self._payload(lowered, prices, events, now, next_funding)
                if payload is not None:
                    conn.push(conn.wrap(name, payload))

    def _payload(
        self,
        stream: str,
        prices: dict[str, Decimal],
        cache: dict[str, str],
        now: int,
        next_funding: int,
    ) -> str | None:
        if stream in ALL_MARKS:
            if "!all" not in cache:
                events = [_mark_event(s, p, now, next_funding) for s, p in prices.items()]
                cache["!all"] = json.dumps(events, separators=(",", ":"))
            return cache["!all"]
        symbol = _mark_symbol(stream)
        if symbol is None or symbol not in prices:
            return None
        if symbol not in cache:
            event = _mark_event(symbol, prices[symbol], now, next_funding)
            cache[symbol] = json.dumps(event, separators=(",", ":"))
        return cache[symbol]

    async def close_all(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close()

    # -- connections ----------------------------------------------------------------

    async def serve(self, request: web.Request, listen_keys: set[str]) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        combined = request.path.rstrip("/").endswith("/stream")
        conn = Connection(ws=ws, combined=combined)
        self._initial_streams(conn, request, listen_keys)
        await self._converse(conn, ws, lambda text: self._answers(conn, text))
        return ws

    def _answers(self, conn: Connection, text: str) -> list[str]:
        reply = self._command(conn, text)
        return [] if reply is None else [reply]

    async def _converse(
        self,
        conn: Connection,
        ws: web.WebSocketResponse,
        answer: Callable[[str], Iterable[str]],
    ) -> None:
        """Serve one connection until it closes: its pushes from a sender task, each text
        message ``answer``-ed (both dialects; what a message means is the dialect's)."""
        self.connections.add(conn)
        sender = asyncio.create_task(self._send_loop(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    for reply in answer(msg.data):
                        conn.push(reply)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.connections.discard(conn)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    @staticmethod
    def _initial_streams(conn: Connection, request: web.Request, listen_keys: set[str]) -> None:
        names: list[str] = []
        tail = request.match_info.get("tail", "")
        names.extend(p for p in tail.split("/") if p)
        names.extend(p for p in request.query.get("streams", "").split("/") if p)
        key = request.query.get("listenKey")
        if key in listen_keys:
            conn.listen_key = key
        for name in names:
            if name in listen_keys:
                conn.listen_key = name
            elif "@" in name:
                conn.streams[name.lower()] = name

    @staticmethod
    async def _send_loop(conn: Connection) -> None:
        while True:
            frame = await conn.queue.get()
            try:
                await conn.ws.send_str(frame)
            except ConnectionError:
                return
            conn.sent += 1

    @staticmethod
    def _command(conn: Connection, text: str) -> str | None:
        """Binance's JSON control messages: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS."""
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
        if not isinstance(message, dict):
            return json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None})
        request_id = message.get("id")
        method = message.get("method")
        params = message.get("params") or []
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return json.dumps({"error": {"code": 2, "msg": "Invalid params"}, "id": request_id})
        if method == "SUBSCRIBE":
            conn.streams.update({p.lower(): p for p in params})
            return json.dumps({"result": None, "id": request_id})
        if method == "UNSUBSCRIBE":
            for p in params:
                conn.streams.pop(p.lower(), None)
            return json.dumps({"result": None, "id": request_id})
        if method == "LIST_SUBSCRIPTIONS":
            return json.dumps({"result": list(conn.streams.values()), "id": request_id})
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return json.dumps({"result": None, "id": request_id})
        return json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": request_id})


def _mark_symbol(stream: str) -> str | None:
    for suffix in MARK_SUFFIXES:
        if stream.endswith(suffix):
            return stream[: -len(suffix)].upper()
    return None


def _mark_event(symbol: str, price: Decimal, now: int, next_funding: int) -> dict[str, object]:
    text = fmt(price)
    return {
        "e": "markPriceUpdate",
        "E": now,
        "s": symbol,
        "p": text,
        "ap": text,
        "P": text,
        "i": text,
        "r": "0.00010000",
        "T": next_funding,
    }
