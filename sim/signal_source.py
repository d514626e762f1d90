"""A stand-in for the external signal service: a WebSocket server that emits signals.

Wire format (the engine's contract):
    {"type": "signal", "id": "9f1c2", "symbol": "BTCUSDT", "exchange": "binance",
     "action": "BUY", "score_week": 71.5, "score_month": 64.0,
     "timestamp": "2026-11-23T12:00:03Z"}
and batches `{"type": "signals", "signals": [...]}`.

Clients must send `Authorization: Bearer <token>`; a wrong or missing token is refused
with HTTP 401 before the upgrade. Every `interval` seconds a wave of `count` signals is
sent to every connected client, with scores drawn from a seeded distribution (a wave is
one frame per signal, or one batch frame after `POST /_sim/config {"wave_format":
"batch"}`). Tests drive it through `POST /_sim/emit`:

    {"signals": [{...}, ...], "batch": false}   specific signals (missing fields filled)
    {"raw": "any text"}                          a raw (e.g. malformed) frame
    {"oversized": 2000000}                       a frame of that many bytes
    {"duplicate": true}                          resend the last frame, byte for byte
    {"wave": true}                               a wave now

`GET /_sim/sent?since=N` lists every frame sent, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sim.markets import DEFAULT_MARKETS
from sim.runner import ThreadedApp
from sim.serving import cancel, serve_until_signal

log = logging.getLogger("sim.signal_source")
ACTIONS = ("BUY", "SELL")


@dataclass
class SentFrame:
    index: int
    time: float
    text: str


@dataclass
class SignalSource:
    token: str
    interval: float
    count: int
    seed: int
    exchange: str = "binance"
    symbols: list[str] = field(default_factory=list)
    wave_format: str = "single"
    paused: bool = False
    clients: set[web.WebSocketResponse] = field(default_factory=set)
    sent: list[SentFrame] = field(default_factory=list)
    waves: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"signals:{self.seed}")  # noqa: S311
        if not self.symbols:
            self.symbols = [m.symbol for m in DEFAULT_MARKETS if m.trading]

    # -- content --------------------------------------------------------------------

    def _score(self, center: float) -> float:
        return round(min(100.0, max(0.0, self.rng.gauss(center, 12.0))), 1)

    def make_signal(self, **fields: Any) -> dict[str, Any]:
        """A well-formed signal; `fields` override any part of it."""
        signal_id = f"{self.rng.getrandbits(40):010x}"
        base = {
            "type": "signal",
            "id": signal_id,
            "symbol": self.rng.choice(self.symbols),
            "exchange": self._venue(),
            "action": self.rng.choice(ACTIONS),
            "score_week": self._score(65.0),
            "score_month": self._score(60.0),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        base.update(fields)
        return base

    def _venue(self) -> str:
        """``exchange`` may name several venues (``binance,bybit``): one stream for both."""
        venues = [name.strip() for name in self.exchange.split(",") if name.strip()]
        if len(venues) == 1:
            return venues[0]  # no draw: one venue's seeded stream stays what it was
        return self.rng.choice(venues)

    def wave(self) -> list[dict[str, Any]]:
        self.waves += 1
        return [self.make_signal() for _ in range(self.count)]

    # -- sending --------------------------------------------------------------------

    async def send(self, text: str) -> int:
        self.sent.append(SentFrame(len(self.sent), time.time(), text))
        delivered = 0
        for ws in list(self.clients):
            try:
                await ws.send_str(text)
                delivered += 1
            except ConnectionError:
                self.clients.discard(ws)
        return delivered

    async def send_signals(self, signals: list[dict[str, Any]], batch: bool) -> int:
        if batch:
            await self.send(json.dumps({"type": "signals", "signals": signals}))
            return 1
        for item in signals:
            await self.send(json.dumps(item))
        return len(signals)

    async def send_wave(self) -> int:
        return await self.send_signals(self.wave(), self.wave_format == "batch")


SOURCE_KEY: web.AppKey[SignalSource] = web.AppKey("signal_source", SignalSource)
WAVES_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("signal_waves", asyncio.Task)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


async def stream(request: web.Request) -> web.StreamResponse:
    source: SignalSource = request.app[SOURCE_KEY]
    if not _authorized(request, source.token):
        return web.json_response({"error": "unauthorized"}, status=401)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    source.clients.add(ws)
    try:
        async for _msg in ws:
            pass  # the service does not listen to its clients
    finally:
        source.clients.discard(ws)
    return ws


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}') from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be an object"}')
    return body


async def emit(request: web.Request) -> web.Response:
    source: SignalSource = request.app[SOURCE_KEY]
    body = await _json_body(request)
    frames = 0
    if "raw" in body:
        frames += 1
        await source.send(str(body["raw"]))
    if body.get("oversized"):
        size = int(body["oversized"])
        frames += 1
        item = source.make_signal()
        item["padding"] = "x" * max(0, size - len(json.dumps(item)))
        await source.send(json.dumps(item))
    if body.get("duplicate") and source.sent:
        frames += 1
        await source.send(source.sent[-1].text)
    if isinstance(body.get("signals"), list):
        signals = [
            source.make_signal(**item) if isinstance(item, dict) else item
            for item in body["signals"]
        ]
        frames += await source.send_signals(signals, bool(body.get("batch")))
    if body.get("wave"):
        frames += await source.send_wave()
    return web.json_response({"frames": frames, "clients": len(source.clients)})


async def sent(request: web.Request) -> web.Response:
    source: SignalSource = request.app[SOURCE_KEY]
    since = request.query.get("since", "0")
    start = int(since) if since.isdigit() else 0
    frames = [{"index": f.index, "time": f.time, "text": f.text} for f in source.sent[start:]]
    return web.json_response({"next": len(source.sent), "sent": frames})


async def configure(request: web.Request) -> web.Response:
    source: SignalSource = request.app[SOURCE_KEY]
    body = await _json_body(request)
    if body.get("wave_format") in ("single", "batch"):
        source.wave_format = body["wave_format"]
    if isinstance(body.get("paused"), bool):
        source.paused = body["paused"]
    return web.json_response(
        {"wave_format": source.wave_format, "paused": source.paused, "waves": source.waves}
    )


async def status(request: web.Request) -> web.Response:
    source: SignalSource = request.app[SOURCE_KEY]
    return web.json_response(
        {"clients": len(source.clients), "waves": source.waves, "sent": len(source.sent)}
    )


async def _waves(app: web.Application) -> None:
    source: SignalSource = app[SOURCE_KEY]
    if source.interval <= 0 or source.count <= 0:
        return
    while True:
        await asyncio.sleep(source.interval)
        if not source.paused:
            await source.send_wave()


async def _start_waves(app: web.Application) -> None:
    app[WAVES_KEY] = asyncio.create_task(_waves(app))


async def _stop(app: web.Application) -> None:
    await cancel(app[WAVES_KEY])
    for ws in list(app[SOURCE_KEY].clients):
        await ws.close()


def build_app(source: SignalSource) -> web.Application:
    app = web.Application()
    app[SOURCE_KEY] = source
    for path in ("/", "/ws", "/signals"):
        app.router.add_get(path, stream)
    app.router.add_post("/_sim/emit", emit)
    app.router.add_get("/_sim/sent", sent)
    app.router.add_post("/_sim/config", configure)
    app.router.add_get("/_sim/status", status)
    app.on_startup.append(_start_waves)
    app.on_shutdown.append(_stop)
    return app


class SignalSourceServer(ThreadedApp):
    """The signal source in a background thread, for tests (`.url`, `.ws_url`, `.emit`)."""

    def __init__(
        self,
        *,
        token: str,
        interval: float,
        count: int,
        seed: int = 1,
        exchange: str = "binance",
        symbols: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self.token = token
        self.source = SignalSource(token, interval, count, seed, exchange, list(symbols or []))

    def build(self) -> web.Application:
        return build_app(self.source)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def emit(self, **body: Any) -> Any:
        return self.admin("POST", "/_sim/emit", body)

    def sent(self, since: int = 0) -> Any:
        return self.admin("GET", f"/_sim/sent?since={since}")


def serve(
    host: str,
    port: int,
    *,
    token: str,
    interval: float,
    count: int,
    seed: int,
    exchange: str = "binance",
    symbols: list[str] | None = None,
) -> None:
    """Run the signal source until SIGINT/SIGTERM (the `vigil signal-sim` entry point)."""
    if not token:
        raise ValueError("a token is required (clients authenticate with it)")
    source = SignalSource(token, interval, count, seed, exchange, list(symbols or []))
    url = f"ws://{host}:{port}/ws"
    app = build_app(source)
    asyncio.run(serve_until_signal(app, host, port, name="signal source", url=url, logger=log))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.signal_source")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--token", required=True)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbols", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(
        args.host,
        args.port,
        token=args.token,
        interval=args.interval,
        count=args.count,
        seed=args.seed,
        exchange=args.exchange,
        symbols=[s for s in args.symbols.split(",") if s.strip()] or None,
    )


if __name__ == "__main__":
    main()
