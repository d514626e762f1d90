"""The dead-man's switch, and the two homes of the watchdog (the API and beat).

A system that is dead as a whole cannot page about itself: nothing of it runs. So beat
calls ``VIGIL_DEADMAN_URL`` every ``VIGIL_DEADMAN_INTERVAL`` seconds while all is well, the
convention of healthchecks.io and Cronitor: an outside service that stops hearing the pings
pages. While a part has been failing for the confirmation time, beat calls ``URL/fail``
instead, which those services page on at once. The ping runs in the beat process itself,
so a killed beat stops it, as does a whole stack killed; a beat whose scheduler hangs stops
its heartbeat task, the watchdog sees the stale heartbeat and the ping turns into ``/fail``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress

import redis
from aiohttp import web

from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.endpoints import resolve_redis_url
from core.logging import redact
from core.services.deps import Deps, exchange_name, get_deps
from core.services.health import ExchangeReads, HealthChecker, WorkerPing
from core.services.paging import Watchdog, watchdog_checker

log = logging.getLogger(__name__)


def ping_url(url: str, ok: bool) -> str:
    """The URL to call: ``url`` while all is well, ``url/fail`` otherwise."""
    return url if ok else f"{url.rstrip('/')}/fail"


def ping(url: str, ok: bool, timeout: float) -> bool:
    """GET the dead-man's URL; False (logged, never raised) when it did not answer 2xx."""
    target = ping_url(url, ok)
    if not target.startswith(("http://", "https://")):
        log.error("VIGIL_DEADMAN_URL must be http(s)")
        return False
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        target, headers={"User-Agent": "vigil-deadman"}, method="GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        log.warning("dead-man's ping not delivered: %s", redact(str(exc))[:200])
        return False


class WatchLoop:
    """The watchdog on its cadence, and the dead-man's ping if configured (beat only)."""

    def __init__(self, watchdog: Watchdog, settings: Settings, *, deadman: bool) -> None:
        self.watchdog = watchdog
        self.settings = settings
        self.deadman = deadman and settings.deadman_url is not None
        self._next_ping = 0.0

    async def once(self) -> None:
        try:
            decision = await self.watchdog.cycle()
            all_well = decision.all_well
        except Exception:  # noqa: BLE001 - the watchdog must outlive any one bad cycle
            log.exception("watchdog cycle failed")
            all_well = False
        if self.deadman and time.monotonic() >= self._next_ping:
            self._next_ping = time.monotonic() + self.settings.deadman_interval
            assert self.settings.deadman_url is not None
            url = self.settings.deadman_url.get_secret_value()
            await asyncio.to_thread(ping, url, all_well, self.settings.alert_http_timeout)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.once()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.watchdog_interval)


def register_api_watchdog(app: web.Application, health: HealthChecker, settings: Settings) -> None:
    """Run the watchdog beside the API's routes for as long as the API serves."""

    async def lifetime(_: web.Application):  # type: ignore[no-untyped-def]
        checker = watchdog_checker(health)
        watchdog = Watchdog(settings, health.clock, checker, host="api", uow=health.uow)
        stop = asyncio.Event()
        task = asyncio.create_task(WatchLoop(watchdog, settings, deadman=False).run(stop))
        yield
        stop.set()
        with suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)

    app.cleanup_ctx.append(lifetime)


def start_beat_watch(
    settings: Settings,
    worker_ping: WorkerPing | None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    deps_factory: Callable[[], Deps] = get_deps,
) -> threading.Thread:
    """The watchdog and the dead-man's ping in a daemon thread of the beat process."""
    client = redis.Redis.from_url(
        resolve_redis_url(settings), socket_timeout=settings.health_check_timeout
    )
    reads = ExchangeReads(deps_factory, 60.0)
    health = HealthChecker(
        settings,
        clock,
        deps_factory,
        client,
        reads,
        worker_ping,
        exchange_name=exchange_name(settings),  # no exchange client built at start-up
    )
    watchdog = Watchdog(settings, clock, health, host="beat", uow=health.uow)
    loop = WatchLoop(watchdog, settings, deadman=True)

    def run() -> None:
        asyncio.run(loop.run(asyncio.Event()))

    thread = threading.Thread(target=run, name="vigil-watch", daemon=True)
    thread.start()
    return thread
