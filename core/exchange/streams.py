"""Mark prices from a venue's public WebSocket, as one awaitable per frame.

The ingest's price stream (``core/ingest/prices.py``) asks for "the next frame of mark
prices" and gets ``{unified symbol: ticker}`` whose tickers carry ``markPrice`` and the
venue's ``timestamp``. How that frame is obtained is the venue's business, and lives here:

- **Binance USD-M**: the all-market mark-price stream (``!markPrice@arr``), one frame per
  exchange tick with every symbol: ccxt.pro ``watch_mark_prices()``.
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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Frame = Mapping[str, Any]
MarkSource = Callable[[], Awaitable[Frame]]


def mark_price_source(pro: Any) -> MarkSource:
    """The next-frame function for a ccxt.pro client (``binanceusdm`` or ``bybit``)."""
    if getattr(pro, "id", "") == "bybit":
        return BybitTickerMarks(pro)
    watch: MarkSource = pro.watch_mark_prices
    return watch


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

    async def __call__(self) -> Frame:
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
                return frame

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
