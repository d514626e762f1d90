"""The signal WebSocket: connect with the bearer token, store every frame, reconnect forever.

Rules this client keeps:

- **Stored before anything else.** A frame is parsed (``parse_frame``, which never raises)
  and committed (``store_frame``) before the next frame is read. If the database is down,
  the client stops reading and retries the same frame with backoff; a frame is never
  dropped because storage failed. (The service gets no acknowledgement, so "not stored"
  and "not read" are the same thing, and TCP backpressure holds the rest.)
- **Bad input is data, not a failure.** Malformed, oversized or invalid frames become
  ``SIGNAL_REJECTED`` events and the connection stays up. Frames larger than the hard cap
  of the socket (many times ``VIGIL_SIGNAL_MAX_FRAME_BYTES``) cannot be read at all: the
  socket drops, the rejection is recorded, and the client reconnects.
- **Reconnect with exponential backoff and full jitter**; the backoff resets once a
  connection has stayed up for a while. Each reconnection writes ``WEBSOCKET_RECONNECTED``
  (with how long it was down and why), each lost connection ``WEBSOCKET_DISCONNECTED``.
- **A refused token is not retried hot**: it backs off up to ``VIGIL_SIGNAL_AUTH_RETRY_SECONDS``
  and writes one critical ``WEBSOCKET_AUTH_REFUSED`` per streak of refusals (it pages).
- **Heartbeat**: a ping every ``VIGIL_SIGNAL_PING_SECONDS``; no pong within half of it
  closes the socket and the client reconnects.

Blocking database work runs in a thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp
from yarl import URL

from core.domain.signals import ParseResult, Rejection, RejectReason, parse_frame
from core.events import EventType, Severity, record_alone
from core.ingest.backoff import Backoff
from core.ingest.context import IngestContext
from core.services.signals import FrameReport, signal_params, store_frame
from core.services.waves import wave_params
from core.transient import DATABASE_DOWN

log = logging.getLogger(__name__)

STORAGE_DOWN = DATABASE_DOWN
# the socket refuses frames beyond this (it has to buffer them whole); below it, the parser
# rejects frames over VIGIL_SIGNAL_MAX_FRAME_BYTES and the connection stays up
HARD_CAP_FACTOR = 64
HARD_CAP_MIN = 4 * 1024 * 1024
AUTH_REFUSED = frozenset({401, 403})
STORE_RETRY_FIRST, STORE_RETRY_MAX = 0.2, 5.0


class SignalClient:
    """One connection at a time to ``VIGIL_SIGNAL_URL``, for the life of the process."""

    def __init__(self, ctx: IngestContext) -> None:
        settings = ctx.settings
        if not settings.signal_url:
            raise ValueError("VIGIL_SIGNAL_URL is not set")
        self.ctx = ctx
        self.url = settings.signal_url
        self.token = settings.signal_token.get_secret_value() if settings.signal_token else ""
        self.parse_params = signal_params(settings)
        self.wave_params = wave_params(settings)
        self.hard_cap = max(HARD_CAP_MIN, HARD_CAP_FACTOR * settings.signal_max_frame_bytes)
        self.backoff = Backoff(
            settings.signal_reconnect_min_seconds,
            max(settings.signal_reconnect_min_seconds, settings.signal_reconnect_max_seconds),
        )
        self.auth_backoff = Backoff(
            settings.signal_reconnect_min_seconds,
            max(settings.signal_reconnect_min_seconds, settings.signal_auth_retry_seconds),
        )
        # a connection that stayed up this long was healthy: the next failure starts over
        self.stable_seconds = max(settings.signal_reconnect_max_seconds, 5.0)
        self._down_since: float | None = None  # monotonic, when the last connection ended
        self._down_reason: str | None = None
        self._failed_attempts = 0
        self._refusing = False  # inside a streak of refused tokens
        self._streak_refusals = 0
        self._outage_reported = False

    # --- the connection loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        status = self.ctx.status
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop.is_set():
                wait = await self._connect_once(http, stop)
                if stop.is_set():
                    break
                status.note_wait(wait)
                log.info("signal socket: reconnecting in %.2fs", wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

    async def _connect_once(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> float:
        """One connection attempt and, if it succeeds, its whole life; returns the wait."""
        try:
            ws = await http.ws_connect(
                self.url,
                headers={"Authorization": f"Bearer {self.token}"},
                heartbeat=self.ctx.settings.signal_ping_seconds,
                max_msg_size=self.hard_cap,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in AUTH_REFUSED:
                await self._auth_refused(exc.status)
                return self.auth_backoff.next()
            await self._connect_failed(f"handshake refused: HTTP {exc.status}")
            return self.backoff.next()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._connect_failed(f"{type(exc).__name__}: {exc}")
            return self.backoff.next()
        started = time.monotonic()
        async with ws:
            await self._connected()
            reason = await self._read(ws, stop)
        if stop.is_set():
            return 0.0
        lived = time.monotonic() - started
        await self._disconnected(reason, lived)
        if lived >= self.stable_seconds:
            self.backoff.reset()
        return self.backoff.next()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> str:
        """Read and store frames until the socket ends or the process stops; why it ended."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(ws.receive())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    return "stopping"
                msg = receiving.result()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    await self.handle_frame(msg.data, stop)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                    return await self._socket_error(error, stop)
                else:  # CLOSE / CLOSING / CLOSED
                    return f"closed by the server (code {ws.close_code})"
        finally:
            stopping.cancel()

    # --- frames ----------------------------------------------------------------------------

    async def handle_frame(self, data: str | bytes, stop: asyncio.Event) -> FrameReport | None:
        """Parse and store one frame; retry storage until it succeeds or the process stops."""
        now = self.ctx.clock.now()
        result = parse_frame(data, self.parse_params, now)
        report = await self._store_durably(result, now, stop)
        if report is None:
            return None
        status = self.ctx.status
        status.frames += 1
        status.last_frame_at = now
        status.loops.touch("signals")
        status.signals_stored += len(report.stored)
        status.duplicates += len(report.duplicates)
        status.rejected += report.rejected
        if any(exchange == self.ctx.exchange for exchange, _ in report.new_waves):
            self.ctx.wave_created.set()
        return report

    async def _store_durably(
        self, result: ParseResult, now: datetime, stop: asyncio.Event
    ) -> FrameReport | None:
        retry = Backoff(STORE_RETRY_FIRST, STORE_RETRY_MAX)
        outage_started: float | None = None
        last_error = ""
        while True:
            try:
                report = await asyncio.to_thread(
                    store_frame, result, now=now, params=self.wave_params, ingest=self.ctx.component
                )
            except STORAGE_DOWN as exc:
                last_error = str(exc).splitlines()[0][:300]
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.error("storing a signal frame failed, not reading on: %s", last_error)
                self.ctx.status.store_retries += 1
                if stop.is_set():
                    log.critical(
                        "stopping with a frame not stored (%d signals, %d rejections)",
                        len(result.signals),
                        len(result.rejections),
                    )
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry.next())
                continue
            if outage_started is not None:
                await self._record(
                    EventType.DATABASE_CONNECTION_LOST,
                    severity=Severity.ERROR,
                    component=self.ctx.component,
                    seconds=round(time.monotonic() - outage_started, 3),
                    retries=retry.attempts,
                    error=last_error,
                    held_signals=len(result.signals),
                )
            return report

    async def _socket_error(self, exc: BaseException | None, stop: asyncio.Event) -> str:
        """The socket failed; a frame over the hard cap is recorded as rejected."""
        code = getattr(exc, "code", None)
        if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            rejection = Rejection(
                RejectReason.FRAME_TOO_LARGE,
                f"over the socket's hard cap of {self.hard_cap} bytes",
                "",
            )
            await self._store_durably(ParseResult((), (rejection,)), self.ctx.clock.now(), stop)
            return "frame over the socket's hard cap"
        return f"socket error: {exc}"

    # --- connection events ---------------------------------------------------------------------

    async def _connected(self) -> None:
        status = self.ctx.status
        status.signal_connected = True
        status.connects += 1
        after_refusals = self._streak_refusals
        was_down = self._down_since is not None or self._failed_attempts > 0
        if was_down:
            down = time.monotonic() - self._down_since if self._down_since is not None else None
            await self._record_connection(
                EventType.WEBSOCKET_RECONNECTED,
                attempts=self._failed_attempts + 1,
                down_seconds=round(down, 3) if down is not None else None,
                previous_reason=self._down_reason,
                auth_refusals=after_refusals,
            )
        log.info("signal socket connected to %s", self._safe_url())
        self._down_since, self._down_reason = None, None
        self._failed_attempts, self._refusing, self._outage_reported = 0, False, False
        self._streak_refusals = 0
        self.auth_backoff.reset()

    async def _disconnected(self, reason: str, lived: float) -> None:
        status = self.ctx.status
        status.signal_connected = False
        status.disconnects += 1
        self._down_since, self._down_reason = time.monotonic(), reason
        log.warning("signal socket lost: %s", reason)
        await self._record_outage(
            EventType.WEBSOCKET_DISCONNECTED,
            severity=Severity.WARNING,
            reason=reason,
            connected_seconds=round(lived, 3),
        )

    async def _connect_failed(self, reason: str) -> None:
        self._failed_attempts += 1
        self._down_reason = reason
        if self._down_since is None:
            self._down_since = time.monotonic()
        log.warning("signal socket: connect failed: %s", reason)
        if not self._outage_reported:  # one event per outage, not one per attempt
            await self._record_outage(
                EventType.WEBSOCKET_DISCONNECTED,
                severity=Severity.WARNING,
                reason=reason,
                connected_seconds=None,
            )

    async def _auth_refused(self, http_status: int) -> None:
        self.ctx.status.auth_refusals += 1
        self._streak_refusals += 1
        self._failed_attempts += 1
        self._down_reason = f"token refused: HTTP {http_status}"
        if self._down_since is None:
            self._down_since = time.monotonic()
        log.error("signal socket: token refused (HTTP %s); check VIGIL_SIGNAL_TOKEN", http_status)
        if not self._refusing:  # one page per streak of refusals
            self._refusing = True
            await self._record_outage(
                EventType.WEBSOCKET_AUTH_REFUSED,
                severity=Severity.CRITICAL,
                http_status=http_status,
                reason="the signal service refused VIGIL_SIGNAL_TOKEN; retrying with backoff",
            )

    async def _record_outage(self, event_type: EventType, **data: Any) -> None:
        """The event that opens an outage; ``_connected`` closes it and rearms this."""
        self._outage_reported = True
        await self._record_connection(event_type, **data)

    async def _record_connection(self, event_type: EventType, **data: Any) -> None:
        """A signal-socket event: which component, and the URL it speaks to (no credentials)."""
        await self._record(event_type, component=self.ctx.component, url=self._safe_url(), **data)

    async def _record(self, event_type: EventType, **data: Any) -> None:
        """Write a connection event; storage trouble only costs the event, logged."""
        try:
            await asyncio.to_thread(_write_event, event_type, self.ctx.exchange, data)
        except STORAGE_DOWN as exc:
            log.error("could not record %s: %s", event_type.value, str(exc).splitlines()[0])

    def _safe_url(self) -> str:
        """The URL without any credentials in it (they never go to logs or events)."""
        return str(URL(self.url).with_user(None).with_password(None).with_query(None))


def _write_event(event_type: EventType, exchange: str, data: dict[str, Any]) -> None:
    severity = data.pop("severity", Severity.INFO)
    record_alone(event_type, severity=severity, exchange=exchange, **data)
