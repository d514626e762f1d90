"""The ingest's exchange streams: mark prices into coalesced price tasks, stop fills into settles.

Price stream. Every mark price of every symbol arrives here (ccxt.pro: Binance's
all-market mark-price stream, one frame per exchange tick; Bybit's per-symbol tickers
topics, merged into frames; see ``core/exchange/streams.py``). Per tick:

- the symbol is not tracked (no band in Redis): nothing;
- the price is strictly inside the symbol's band: nothing, not even a Redis call (the band
  is the region in which no decision can change, published by the workers after acting);
- otherwise the tick extends the symbol's coalescing record in Redis and, if no price task
  is pending for the symbol, queues ``vigil.stops.on_price(exchange, symbol)``: one Lua call
  per tick that matters; a frame's ticks share one pipeline round trip, its several symbols
  a few per task (``core/ingest/price_dispatch.py``).

The bands are kept in memory and follow Redis: the ingest subscribes to the bands channel
(a worker announces each symbol it republishes), re-reads every band periodically as a
backstop for missed announcements, and so tracks new symbols and changed bands without a
restart. The ingest makes no trading decision and never calls the order API.

User-data stream. Our stops' updates (``watch_orders``): when one of the engine's stops
(its client id parses, purpose stop / protection / emergency) has filled, the ingest
records ``STOP_TRIGGERED`` and queues ``vigil.orders.settle_close(position_id)``, which
records the close with the real exit and PnL. A settle the broker cannot take (Redis down)
waits in a durable outbox under ``VIGIL_HOME`` and is queued in order once it can be
(``core/ingest/fill_outbox.py``). Reconciliation is the fallback for fills missed while the
stream was down.

Both streams reconnect with exponential backoff and jitter, and each reconnection is a
``WEBSOCKET_RECONNECTED`` event. A Redis outage costs the frames it spans (each one is
dropped with a log line at the start and end of the outage), never the stream; and the
four loops (bands, mark prices, user data, fill outbox) each run under a guard
(core/ingest/guard.py) that restarts whatever still fails, so no loop ends while the
process lives.

Broker access: tasks are queued through an ``Enqueue`` (``core.ingest.context``), the
ingest's one door to the broker, handed in by the process that runs the stream
(``tasks/sender.py`` builds the Celery one), so this module never loads Celery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import redis
import redis.asyncio as aioredis

from core import task_names as names
from core.config import Settings
from core.domain.bands import PriceBand
from core.domain.orders import STOP_PURPOSES
from core.endpoints import exchange_client_options, resolve_redis_url
from core.exchange.client_ids import parse_client_id
from core.exchange.errors import AuthenticationFailed, classify
from core.exchange.factory import build_pro_exchange
from core.exchange.streams import MarkTick, mark_price_source
from core.ingest.backoff import Backoff
from core.ingest.context import Enqueue, EnqueueFailed, IngestStatus
from core.ingest.fill_outbox import FillOutbox, outbox_path
from core.ingest.guard import supervise
from core.ingest.price_dispatch import price_task, split_evenly
from core.ingest.stream_events import off_loop, record_reconnect, record_stop_fill, report_restart
from core.services import bands
from core.services.deps import exchange_name as venue_name
from core.services.tick_window import TICK_SCRIPT, pending_key, window_key

log = logging.getLogger(__name__)

SETTLE_TASK = names.SETTLE_CLOSE


# --- bands --------------------------------------------------------------------------------


class BandCache:
    """The ingest's copy of every tracked symbol's combined band (absent: not tracked).

    Written only by the bands follower (one coroutine), so a full reload and a per-symbol
    refresh never interleave.
    """

    def __init__(self, client: redis.Redis, exchange: str) -> None:
        self.client = client
        self.exchange = exchange
        self.bands: dict[str, PriceBand] = {}
        self.loaded_at = 0.0

    def get(self, symbol: str) -> PriceBand | None:
        return self.bands.get(symbol)

    async def load_all(self) -> None:
        self.bands = await asyncio.to_thread(self._read_all)
        self.loaded_at = time.monotonic()

    async def refresh(self, symbol: str) -> None:
        found = await asyncio.to_thread(bands.combined, self.client, self.exchange, symbol)
        if found is None:
            self.bands.pop(symbol, None)
        else:
            self.bands[symbol] = found

    def _read_all(self) -> dict[str, PriceBand]:
        out: dict[str, PriceBand] = {}
        for symbol in bands.tracked_symbols(self.client, self.exchange):
            found = bands.combined(self.client, self.exchange, symbol)
            if found is not None:
                out[symbol] = found
        return out


# --- the gate: which ticks matter ---------------------------------------------------------


@dataclass
class StreamStats:
    """Counters for logs and benchmarks."""

    frames: int = 0
    ticks: int = 0
    outside: int = 0
    enqueued: int = 0
    enqueue_failures: int = 0
    reconnects: int = 0
    stop_fills: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Mark:
    symbol: str  # exchange-native, e.g. BTCUSDT
    price: Decimal
    tick_ms: int  # the exchange's time of the tick


class PriceGate:
    """Turns ticks into coalescing-record updates and at most one pending task per symbol."""

    def __init__(
        self,
        exchange: str,
        client: aioredis.Redis,
        band_cache: BandCache,
        sender: Enqueue,
        *,
        pending_ttl_s: float,
        stats: StreamStats | None = None,
        per_task: int = 1,  # a frame's symbols: at most per_task per task, >= slots tasks
        slots: int = 1,
        spread_from: int = 1,  # ... once the frame has this many; fewer ride in one task
    ) -> None:
        self.exchange = exchange
        self.per_task, self.slots, self.spread_from = per_task, slots, spread_from
        self.client = client
        self.bands = band_cache
        self.sender = sender
        self.pending_ttl_ms = int(pending_ttl_s * 1000)
        self.stats = stats or StreamStats()
        self._script = client.register_script(TICK_SCRIPT)
        # one thread sends to the broker: the event loop never blocks on it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-enqueue")

    async def on_marks(self, ticks: Sequence[MarkTick], now: datetime) -> int:
        """Handle one frame's ticks; returns how many price tasks were queued.

        The hot loop of the ingest: most symbols of an all-market frame have no band (no
        position), so a tick costs a dictionary lookup; only a watched symbol's price is
        parsed, and only a tick outside its band goes on to Redis.
        """
        self.stats.ticks += len(ticks)
        outside: list[Mark] = []
        for symbol, text, tick_ms in ticks:
            band = self.bands.get(symbol)
            if band is None:
                continue
            try:
                price = Decimal(text)
            except InvalidOperation:
                continue
            if not band.contains(price, now):
                outside.append(Mark(symbol, price, int(tick_ms)))
        if not outside:
            return 0
        self.stats.outside += len(outside)
        pipe = self.client.pipeline(transaction=False)
        for mark in outside:
            keys = [window_key(self.exchange, mark.symbol), pending_key(self.exchange, mark.symbol)]
            args: list[str | int] = [str(mark.price), mark.tick_ms, self.pending_ttl_ms]
            await self._script(keys=keys, args=args, client=pipe)
        claimed = await pipe.execute()
        won = [mark.symbol for mark, first in zip(outside, claimed, strict=True) if first]
        groups = split_evenly(won, self.per_task, self.slots, self.spread_from)
        return sum([await self._enqueue(group) for group in groups])

    async def _enqueue(self, symbols: list[str]) -> int:
        try:
            await self.send(*price_task(self.exchange, symbols))
        except EnqueueFailed as exc:
            self.stats.enqueue_failures += 1
            log.warning("price task for %s not queued, next tick retries: %s", symbols, exc)
            await self.client.delete(*(pending_key(self.exchange, s) for s in symbols))
            return 0
        self.stats.enqueued += 1
        return 1

    async def send(self, name: str, args: Sequence[object]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.sender, name, args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


# --- user-data stream: fills of our stops ------------------------------------------------


def filled_stop_position(order: Mapping[str, Any]) -> int | None:
    """The position whose stop this order update reports filled, or None.

    ccxt maps a stop's ``TRIGGERED`` and ``FINISHED`` (algo order) and the resulting market
    order's ``FILLED`` all to ``closed``; ``TRIGGERED`` only says the market order is on its
    way, so it is skipped: the fill itself is what the close path can settle.
    """
    ours = parse_client_id(order.get("clientOrderId"))
    if ours is None or ours.purpose not in STOP_PURPOSES:
        return None
    info = order.get("info") or {}
    if order.get("status") != "closed" or info.get("X") == "TRIGGERED":
        return None
    return ours.position_id


class FillDedup:
    """Each fill arrives twice or more (algo update, order update); settle once per window."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._seen: dict[int, float] = {}

    def first(self, position_id: int) -> bool:
        now = time.monotonic()
        self._seen = {k: t for k, t in self._seen.items() if now - t < self.window_s}
        if position_id in self._seen:
            return False
        self._seen[position_id] = now
        return True


# --- the component --------------------------------------------------------------------------


LOOP_RESTART_CEILING = 5.0  # a price loop that keeps failing is retried at least this often


def _backoff(settings: Settings, ceiling: float | None = None) -> Backoff:
    ceiling = min(ceiling or settings.price_stream_backoff_max, settings.price_stream_backoff_max)
    return Backoff(first=min(0.25, ceiling), ceiling=ceiling)


async def _pause(backoff: Backoff, stop_event: asyncio.Event) -> None:
    """Wait the backoff's next delay, or less if the process is stopping."""
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=backoff.next())
    except TimeoutError:
        return


class PriceStream:
    """The price stream and the user-data stream of one exchange, run until ``stop_event``."""

    def __init__(
        self,
        settings: Settings,
        exchange_name: str,
        pro_exchange: Any,
        async_redis: aioredis.Redis,
        sync_redis: redis.Redis,
        sender: Enqueue,
        status: IngestStatus | None = None,
    ) -> None:
        self.settings = settings
        self.status = status or IngestStatus()
        self._redis_down_since: float | None = None
        self.exchange_name = exchange_name
        self.pro = pro_exchange
        self.async_redis = async_redis
        self.stats = StreamStats()
        self.bands = BandCache(sync_redis, exchange_name)
        self.gate = PriceGate(
            exchange_name,
            async_redis,
            self.bands,
            sender,
            pending_ttl_s=settings.price_pending_ttl,
            stats=self.stats,
            per_task=settings.price_task_batch,
            slots=settings.price_task_slots,
            spread_from=settings.price_task_spread_from,
        )
        self.dedup = FillDedup()
        # settles the broker could not take (Redis down) wait here, durably, in order
        self.outbox = FillOutbox(outbox_path(settings, exchange_name), self.gate.send)
        self._native: dict[str, str] = {}
        self.mark_source = mark_price_source(pro_exchange)

    async def run(self, stop_event: asyncio.Event) -> None:
        book = self.status.loops
        loops = [
            asyncio.create_task(
                supervise(
                    name,
                    loop,
                    stop_event,
                    book=book,
                    backoff=_backoff(self.settings, ceiling=LOOP_RESTART_CEILING),
                    report=report_restart,
                ),
                name=name,
            )
            for name, loop in (
                ("bands", self._follow_bands),
                ("mark_prices", self._watch_marks),
                ("user_data", self._watch_stop_fills),
                ("fill_outbox", self.outbox.run),
            )
        ]
        try:
            await stop_event.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            close = getattr(self.mark_source, "close", None)
            if close is not None:
                await close()
            self.gate.close()

    def native(self, unified: str) -> str:
        """``BTC/USDT:USDT`` -> ``BTCUSDT`` (cached; the engine speaks native symbols)."""
        found = self._native.get(unified)
        if found is None:
            market = (self.pro.markets or {}).get(unified)
            found = str(market["id"]) if market else unified.replace("/", "").split(":")[0]
            self._native[unified] = found
        return found

    # --- mark prices ------------------------------------------------------------------------

    async def _watch_marks(self, stop_event: asyncio.Event) -> None:
        async for ticks in self._stream("mark_prices", self.mark_source, stop_event):
            self.stats.frames += 1
            now = datetime.now(UTC)
            self.status.last_tick_at = now
            self.status.loops.touch("mark_prices")
            try:
                if self._redis_down_since is not None:
                    await self._release_pending_flags()
                await self.gate.on_marks(ticks, now)
            except redis.RedisError as exc:  # this frame is lost; the next one tries again
                self._note_redis_down(exc)
                continue
            self._note_redis_up()

    def _note_redis_down(self, exc: redis.RedisError) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.error("Redis unreachable, mark-price frames dropped until it is back: %s", exc)

    async def _release_pending_flags(self) -> None:
        """After an outage, no symbol waits for a price task that may never run.

        A restarted Redis replays its append-only file, which can hold a pending flag whose
        task was taken (or lost) in the last second before the crash: the symbol would stay
        blocked for the flag's whole TTL. One extra price task is harmless (each is
        idempotent under the symbol lock); a stop left behind is not.
        """
        keys = [pending_key(self.exchange_name, symbol) for symbol in self.bands.bands]
        if keys:
            await self.async_redis.delete(*keys)

    def _note_redis_up(self) -> None:
        if self._redis_down_since is not None:
            lost = time.monotonic() - self._redis_down_since
            self._redis_down_since = None
            log.warning("Redis reachable again after %.1fs; mark prices flow", lost)

    # --- fills of our stops -----------------------------------------------------------------

    async def _watch_stop_fills(self, stop_event: asyncio.Event) -> None:
        async for orders in self._stream("orders", self.pro.watch_orders, stop_event):
            self.status.loops.touch("user_data")
            for order in orders:
                position_id = filled_stop_position(order)
                if position_id is None or not self.dedup.first(position_id):
                    continue
                self.stats.stop_fills += 1
                symbol = self.native(str(order.get("symbol") or ""))
                await off_loop(record_stop_fill, self.exchange_name, symbol, position_id, order)
                await self.outbox.deliver(SETTLE_TASK, (position_id, "stop_triggered"))

    # --- reconnecting streams ---------------------------------------------------------------

    async def _stream(
        self, name: str, watch: Callable[[], Any], stop_event: asyncio.Event
    ) -> AsyncIterator[Any]:
        """Yield what ``watch()`` returns, reconnecting with backoff after any failure."""
        backoff = _backoff(self.settings)
        last_error: str | None = None
        while not stop_event.is_set():
            try:
                result = await watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream's boundary: classify, back off, reconnect
                failure = classify(exc)
                last_error = str(failure)
                level = (
                    logging.ERROR if isinstance(failure, AuthenticationFailed) else logging.WARNING
                )
                log.log(
                    level, "%s stream failed (attempt %d): %s", name, backoff.attempts + 1, failure
                )
                await _pause(backoff, stop_event)
                continue
            if last_error is not None:
                self.stats.reconnects += 1
                await off_loop(
                    record_reconnect, self.exchange_name, name, backoff.attempts, last_error
                )
                last_error = None
                backoff.reset()
            yield result

    async def _follow_bands(self, stop_event: asyncio.Event) -> None:
        """Apply each band announcement; re-read all bands now and then, and after errors."""
        backoff = _backoff(self.settings)
        refresh = self.settings.price_band_refresh_interval
        while not stop_event.is_set():
            pubsub = self.async_redis.pubsub()
            try:
                await pubsub.subscribe(bands.channel(self.exchange_name))
                await self.bands.load_all()  # after subscribing: no announcement falls between
                backoff.reset()
                while not stop_event.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        data = message["data"]
                        await self.bands.refresh(
                            data.decode() if isinstance(data, bytes) else str(data)
                        )
                    if time.monotonic() - self.bands.loaded_at >= refresh:
                        await self.bands.load_all()
            except redis.RedisError as exc:
                log.warning("bands subscription lost, re-reading all bands: %s", exc)
                await _pause(backoff, stop_event)
            finally:
                await pubsub.aclose()


async def run_price_stream(
    settings: Settings,
    stop_event: asyncio.Event,
    enqueue: Enqueue,
    status: IngestStatus | None = None,
) -> None:
    """The ingest component: this exchange's price and user-data streams until ``stop_event``.

    ``enqueue`` is the ingest's task sender (``IngestContext.enqueue``); ``status`` the
    ingest's live status, where each loop's activity and the last tick are kept.
    """
    exchange_name = venue_name(settings)
    pro = build_pro_exchange(settings.exchange, **exchange_client_options(settings))
    url = resolve_redis_url(settings)
    async_redis = aioredis.Redis.from_url(url)
    sync_redis = redis.Redis.from_url(url)
    try:
        stream = PriceStream(
            settings,
            exchange_name,
            pro,
            async_redis,
            sync_redis,
            enqueue,
            status,
        )
        await stream.run(stop_event)
    finally:
        await pro.close()
        await async_redis.aclose()
        sync_redis.close()
