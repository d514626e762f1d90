"""The operator console's routes, served by ``vigil api`` on its own port.

  GET /console                         the book and the system (page shell)
  GET /console/positions/{id}          one position's life (404 page for an unknown id)
  GET /console/fragments/book          ?exchange= &status= &sort=  (HTML fragment)
  GET /console/fragments/system        components, queues, waves, alerts, halt state
  GET /console/fragments/positions/{id}
  GET /console/static/...              the page's own script and style (no CDN)

Why shells plus fragments: a browser cannot put a bearer token on a navigation, so the page
shells carry no data and are served to anyone; their script (static/console.js) fetches the
fragments with ``Authorization: Bearer <token>`` (a token given once as ``?token=`` or in the
form, kept in the tab's sessionStorage) and swaps them in every two seconds. The fragments
are the data: with ``VIGIL_API_TOKEN`` set (and reads not public) they need the token; the
controls are rendered only for a request that carries it. Controls post to the operator
endpoints (``POST /halt``, ``/resume``, ``/positions/{id}/close``, ``/close-all``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis
from aiohttp import web

from core.api import doors
from core.api.console import data, views
from core.clock import Clock
from core.config import Settings
from core.db.session import new_session
from core.services.health import ExchangeReads, HealthChecker

STATIC = Path(__file__).parent / "static"
# what the token rule lets a browser read without the token (core/api/doors.py: exact path,
# or everything under a path ending in /): the page shells, which carry no data when reads
# need the token, and the script and style. The fragments under /console/fragments/ are the
# data and stay behind the token.
PUBLIC_SHELLS = ("/console", "/console/positions/", "/console/static/")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    settings: Settings
    clock: Clock
    health: HealthChecker
    sources: data.BookSources
    warming: asyncio.Future[None] | None = None  # the start-up read of markets and marks

    def queue_depth(self, name: str) -> int | None:
        try:
            return int(self.health.redis.llen(name))
        except redis.RedisError:
            return None


CONSOLE = web.AppKey("vigil_console", Console)


def register(app: web.Application, settings: Settings, clock: Clock, health: HealthChecker) -> None:
    """Add the console to ``vigil api``; ``/`` sends browsers here (JSON clients keep the index)."""
    exchange = health.exchange_name or health.deps_factory().exchange_name
    reads: ExchangeReads = health.reads
    sources = data.BookSources(
        exchange_name=exchange,
        orders=reads,
        market=data.MarketView(health.deps_factory, settings.health_cache_seconds),
        clock=data.UnprotectedClock(),
        callback_percent=settings.trailing_callback_percent,
        others=_other_venues(settings, exchange),
    )
    app[CONSOLE] = Console(settings, clock, health, sources)
    app.on_startup.append(_warm_up)
    # before the token rule: a browser asking for / is sent on, whatever the token
    app.middlewares.insert(0, browsers_to_console)
    for shell in PUBLIC_SHELLS:
        doors.allow_without_token(app, shell)
    for path, handler in (
        ("", book_page),
        ("/positions/{id}", position_page),
        ("/fragments/book", book_fragment),
        ("/fragments/system", system_fragment),
        ("/fragments/positions/{id}", position_fragment),
        ("/static/{name}", static_file),
    ):
        app.router.add_get("/console" + path, handler)


def _other_venues(settings: Settings, default: str) -> dict[str, data.VenueReads]:
    """Cached reads of every venue of the deployment besides ``default`` (VIGIL_EXCHANGES),
    each through that venue's own exchange client, built on first use."""
    from core.services.deps import deps_for

    found = {}
    for venue in _configured_venues(settings):
        if venue != default:
            factory = partial(deps_for, venue)
            found[venue] = data.VenueReads(
                ExchangeReads(factory, settings.health_cache_seconds),
                data.MarketView(factory, settings.health_cache_seconds),
            )
    return found


async def _warm_up(app: web.Application) -> None:
    """Read markets and marks in the background at start, so the first page is not the one
    that pays for them; a failure here only means the first page pays after all."""
    console = app[CONSOLE]
    console.warming = asyncio.get_running_loop().run_in_executor(None, _warm, console.sources)


def _warm(sources: data.BookSources) -> None:
    for venue in sources.venues().values():
        venue.market.warm()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def browsers_to_console(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A browser asking for ``/`` gets the console; curl and JSON clients keep the index."""
    if request.path == "/" and request.method == "GET" and _wants_html(request):
        raise web.HTTPFound("/console")
    return await handler(request)


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def token_required(settings: Settings) -> bool:
    """Reads need the token when one is configured and reads were not made public."""
    configured = settings.api_token is not None and bool(settings.api_token.get_secret_value())
    return configured and not settings.api_public_reads


def has_valid_token(request: web.Request, settings: Settings) -> bool:
    """The request carries the configured token (the controls are shown only then)."""
    if settings.api_token is None or not settings.api_token.get_secret_value():
        return False
    return doors.bearer_matches(request, settings.api_token.get_secret_value())


def _access(request: web.Request) -> tuple[Console, bool] | web.Response:
    """The console and whether controls may be shown; a 401 fragment when reads need a token."""
    console = request.app[CONSOLE]
    valid = has_valid_token(request, console.settings)
    if token_required(console.settings) and not valid:
        return _html('<p class="warn">This API needs its token.</p>', status=401)
    return console, valid


def _position_id(request: web.Request) -> int | None:
    raw = request.match_info["id"]
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


# --- pages -------------------------------------------------------------------------------------


STATIC_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}


async def static_file(request: web.Request) -> web.StreamResponse:
    """The console's own script and style (the page loads nothing from elsewhere)."""
    name = request.match_info["name"]
    if name not in STATIC_TYPES:
        raise web.HTTPNotFound()
    return web.FileResponse(
        STATIC / name, headers={"Content-Type": STATIC_TYPES[name], "Cache-Control": "no-cache"}
    )


async def book_page(request: web.Request) -> web.Response:
    """The operator console (HTML): the book, its protection and the system; with
    VIGIL_API_TOKEN set it asks for the token (or take it once as ?token=)."""
    console = request.app[CONSOLE]
    exchanges = sorted({console.sources.exchange_name, *_configured_venues(console.settings)})
    required = token_required(console.settings)
    first = None if required else await asyncio.to_thread(_render_book, console, None, None, None)
    return _html(views.book_page(exchanges, required, first))


def _render_book(
    console: Console,
    exchange: str | None,
    status: str | None,
    sort: str | None,
    controls: bool = False,
) -> str:
    with new_session() as session:
        view = data.read_book(session, console.sources, console.clock.now())
    rows = data.select_rows(view, exchange, status, sort)
    return views.book_fragment(view, rows, controls)


def _configured_venues(settings: Settings) -> list[str]:
    venues = getattr(settings, "exchanges", None)
    if isinstance(venues, list | tuple):
        return [str(v) for v in venues]
    return []


async def position_page(request: web.Request) -> web.Response:
    """One position's life in the console (HTML): its timeline and its orders. An unknown
    or malformed id is a 404 page."""
    console = request.app[CONSOLE]
    position_id = _position_id(request)

    def exists() -> bool:
        with new_session() as session:
            return data.position_exists(session, position_id) if position_id else False

    if position_id is None or not await asyncio.to_thread(exists):
        what = f"No position {request.match_info['id']!r}."
        return _html(views.not_found_page(what), status=404)
    return _html(views.position_page(position_id, token_required(console.settings)))


# --- fragments ---------------------------------------------------------------------------------


async def book_fragment(request: web.Request) -> web.Response:
    """The console's book as an HTML fragment (?exchange= &status= &sort=risk|symbol|age|pnl|id),
    polled by the page; controls only for a request with the token."""
    access = _access(request)
    if isinstance(access, web.Response):
        return access
    console, controls = access
    q = request.query
    body = await asyncio.to_thread(
        _render_book, console, q.get("exchange"), q.get("status"), q.get("sort"), controls
    )
    return _html(body)


async def system_fragment(request: web.Request) -> web.Response:
    """The console's system panel as an HTML fragment: /health's components, queue depths,
    recent waves, open alerts, the halts in force."""
    access = _access(request)
    if isinstance(access, web.Response):
        return access
    console, controls = access
    report = (await console.health.check()).as_dict()

    def render() -> str:
        with new_session() as session:
            view = data.read_system(session, console.queue_depth)
            return views.system_fragment(report, view, console.clock.now(), controls)

    return _html(await asyncio.to_thread(render))


async def position_fragment(request: web.Request) -> web.Response:
    """One position's timeline and orders as an HTML fragment, polled by its page."""
    access = _access(request)
    if isinstance(access, web.Response):
        return access
    console, controls = access
    position_id = _position_id(request)

    def render() -> str | None:
        if position_id is None:
            return None
        with new_session() as session:
            story = data.read_position(session, position_id)
            if story is None:
                return None
            return views.position_fragment(story, console.clock.now(), controls)

    body = await asyncio.to_thread(render)
    if body is None:
        return _html(f"<p>No position {views.e(request.match_info['id'])}.</p>", status=404)
    return _html(body)
