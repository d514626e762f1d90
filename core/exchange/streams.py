"""Mark prices from a venue's public WebSocket, as one awaitable per frame.

The ingest's price stream (``core/ingest/prices.py``) asks for "the next frame of mark
prices" and gets a list of ``(native symbol, mark price as the venue wrote it, venue time in
ms)``. The price stays text: the ingest turns it into a ``Decimal`` only for the few symbols
it watches, so a frame of every market costs a parse and a dictionary lookup per tick. How
that frame is obtained is the venue's business, and lives here:

- **Binance USD-M**: the all-market mark-price stream (``!markPrice@arr@1s``), one frame per
  second with every symbol. Read straight off the socket and parsed with orjson
  (``BinanceMarkFrames``): ccxt.pro's unified tickers cost ~17x more CPU per tick, for fields
  the engine never reads (bench/bench_ingest.py). The socket URL is the one ccxt.pro itself
  would use (its ``linear`` market-stream URL), so live, testnet and the paper exchange
  differ only in configuration.
- **Bybit v5 linear**: there is no all-market stream; mark prices ride on the per-symbol
  ``tickers.<SYMBOL>`` topic (a snapshot, then deltas carrying ``markPrice`` when it
  changes; ccxt merges each delta into the cached ticker). Every active linear USDT
  perpetual is subscribed in one request (``watch_tickers``), then one watcher per symbol
  (``watch_ticker``, already subscribed: no further request) feeds a queue, so an update of
  one symbol is never lost while another is being handled (a single multi-symbol watch
  hands back one symbol per call and drops updates that land between calls). A frame is
  whatever is queued, latest ticker per symbol.

A watcher that fails (connection lost, authentication, ...) makes the next frame raise; the
caller backs off and asks again, which subscribes afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson

MarkTick = tuple[str, str, int]  # (native symbol, mark price text, venue time in ms)
MarkSource = Callable[[], Awaitable[list[MarkTick]]]
ALL_MARKS_STREAM = "!markPrice@arr@1s"


def mark_price_source(pro: Any) -> MarkSource:
    """The next-frame function for a ccxt.pro client (``binanceusdm`` or ``bybit``)."""
    if getattr(pro, "id", "") == "bybit":
        return BybitTickerMarks(pro)
    return BinanceMarkFrames(pro.get_ws_url("linear", "market"))


def binance_mark_ticks(frame: bytes | str) -> list[MarkTick]:
    """The ticks of one ``!markPrice@arr`` frame (raw or wrapped as a combined stream).

    Anything else on the socket (the subscription's answer, an error) is no ticks.
    """
    data = orjson.loads(frame)
    if isinstance(data, dict):
        data = data.get("data")
    if not isinstance(data, list):
        return []
    ticks: list[MarkTick] = []
    for event in data:
        try:
            ticks.append((event["s"], event["p"], event["E"]))
        except (KeyError, TypeError):
            continue
    return ticks


class BinanceMarkFrames:
    """Binance's all-market mark prices, read off the socket without ccxt's unification.

    One connection, subscribed once; a closed or failed socket raises, and the next call
    connects afresh (the caller backs off between attempts).
    """

    def __init__(self, url: str, *, heartbeat_s: float = 30.0) -> None:
        self.url = url
        self.heartbeat_s = heartbeat_s
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def __call__(self) -> list[MarkTick]:
        ws = self._ws if self._ws is not None and not self._ws.closed else await self._connect()
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                ticks = binance_mark_ticks(message.data)
                if ticks:
                    return ticks
                continue
            await self.close()
            raise ConnectionError(f"mark price socket closed ({message.type.name})")

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        await self.close()
        self._session = aiohttp.ClientSession()
        # heartbeat: a silent dead peer is noticed within 2x heartbeat, not never
        self._ws = await self._session.ws_connect(self.url, heartbeat=self.heartbeat_s)
        request = {"method": "SUBSCRIBE", "params": [ALL_MARKS_STREAM], "id": 1}
        await self._ws.send_str(orjson.dumps(request).decode())  # control frames are text
        return self._ws

    async def close(self) -> None:
        ws, session, self._ws, self._session = self._ws, self._session, None, None
        if ws is not None:
            await ws.close()
        if session is not None:
            await session.close()


def linear_usdt_symbols(markets: Mapping[str, Any]) -> list[str]:
    """Every active linear USDT perpetual, as ccxt's unified symbols, sorted."""
    return sorted(
        symbol
        for symbol, market in markets.items()
        if market.get("swap")
        and market.get("linear")
        and market.get("settle") == "USDT"
        and market.get("active", True)
    )


class BybitTickerMarks:
    """Bybit's mark prices: every linear USDT perpetual's ``tickers`` topic, merged."""

    def __init__(self, pro: Any) -> None:
        self.pro = pro
        self._queue: asyncio.Queue[tuple[str, Any] | BaseException] = asyncio.Queue()
        self._watchers: list[asyncio.Task[None]] = []

    async def __call__(self) -> list[MarkTick]:
        if not self._watchers:
            await self._start()
        frame: dict[str, Any] = {}
        item = await self._queue.get()
        while True:
            if isinstance(item, BaseException):
                await self.close()
                raise item
            symbol, ticker = item
            frame[symbol] = ticker
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return self._ticks(frame)

    def _ticks(self, tickers: Mapping[str, Any]) -> list[MarkTick]:
        """Latest ticker per unified symbol -> ticks in the venue's own symbols."""
        markets = self.pro.markets or {}
        ticks: list[MarkTick] = []
        for unified, ticker in tickers.items():
            price = ticker.get("markPrice")
            market = markets.get(unified)
            if price is None or market is None:
                continue
            tick_ms = ticker.get("timestamp") or int(time.time() * 1000)
            ticks.append((str(market["id"]), str(price), int(tick_ms)))
        return ticks

    async def _start(self) -> None:
        await self.pro.load_markets()
        symbols = linear_usdt_symbols(self.pro.markets or {})
        if not symbols:
            raise RuntimeError("no active linear USDT perpetuals to watch")
        # one subscribe request for every topic; it answers with the first update
        first = await self.pro.watch_tickers(symbols)
        for symbol, ticker in first.items():
            self._queue.put_nowait((symbol, ticker))
        self._watchers = [
            asyncio.create_task(self._watch(symbol), name=f"ticker:{symbol}") for symbol in symbols
        ]

    async def _watch(self, symbol: str) -> None:
        while True:
            try:
                ticker = await self.pro.watch_ticker(symbol)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to the frame reader, which reconnects
                self._queue.put_nowait(exc)
                return
            self._queue.put_nowait((symbol, ticker))

    async def close(self) -> None:
        """Stop every watcher and forget what was queued (the next call starts afresh)."""
        watchers, self._watchers = self._watchers, []
        for task in watchers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*watchers, return_exceptions=True)
        self._queue = asyncio.Queue()
