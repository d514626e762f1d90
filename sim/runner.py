"""Run the paper exchange in-process, in a background thread with its own event loop.

For tests and benchmarks: `SimServer().start()` binds port 0 (a free port), and the
instance exposes `.url`, `.ws_url`, typed admin helpers and `.stop()`. The thread owns the
loop; everything else talks to it over HTTP exactly as an external client would, so the
simulator's state is only ever touched from its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Self

from aiohttp import web

from sim.server import build_app
from sim.state import SimOptions


class ThreadedApp:
    """An aiohttp application served from a daemon thread on a free port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------

    def build(self) -> web.Application:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        self._thread = threading.Thread(target=self._run, name="paper-exchange", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("paper exchange did not start in time")
        if self._error is not None:
            raise RuntimeError("paper exchange failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as exc:  # surfaced to start() in the caller's thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.build(), shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or not loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        future.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the admin API; raises `AdminError` with the JSON body on a 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - local http URL built here
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AdminError(exc.code, json.loads(exc.read() or b"null")) from exc


class SimServer(ThreadedApp):
    """The paper exchange in a background thread: `.url`, `.ws_url`, admin helpers."""

    def __init__(self, options: SimOptions | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.options = options or SimOptions()

    def build(self) -> web.Application:
        return build_app(self.options)

    @property
    def dialect(self) -> str:
        return self.options.dialect

    @property
    def ws_url(self) -> str:
        """The public stream: Binance's `/ws`, or Bybit's linear `/v5/public/linear`."""
        if self.options.dialect == "bybit":
            return f"ws://{self.host}:{self.port}/v5/public/linear"
        return f"ws://{self.host}:{self.port}/ws"

    # -- admin helpers --------------------------------------------------------------

    def reset(self, **body: Any) -> Any:
        return self.admin("POST", "/_sim/reset", body)

    def set_price(self, symbol: str, price: str | float) -> Any:
        return self.admin("POST", "/_sim/price", {"symbol": symbol, "price": str(price)})

    def fault(self, endpoint: str, kind: str, **fields: Any) -> Any:
        return self.admin("POST", "/_sim/fault", {"endpoint": endpoint, "kind": kind, **fields})

    def state(self) -> Any:
        return self.admin("GET", "/_sim/state")

    def requests(self, since: int = 0) -> Any:
        return self.admin("GET", f"/_sim/requests?since={since}")

    def tick(self, count: int = 1) -> Any:
        """Advance prices `count` ticks now: `{"ticks": total since reset, "prices": {...}}`."""
        return self.admin("POST", "/_sim/tick", {"count": count})

    def clock(self, paused: bool | None = None) -> Any:
        """Read the clock, or stop (`paused=True`) / restart the wall-clock ticks."""
        if paused is None:
            return self.admin("GET", "/_sim/clock")
        return self.admin("POST", "/_sim/clock", {"paused": paused})

    @contextlib.contextmanager
    def paused_clock(self) -> Iterator[Self]:
        """Prices move only by `tick()` (and by hand) inside the block; restored after it."""
        before = self.clock()["paused"]
        self.clock(paused=True)
        try:
            yield self
        finally:
            self.clock(paused=before)


class AdminError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
