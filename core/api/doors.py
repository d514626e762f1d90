"""The API's doors: one token rule for every route, and bad input answered 400, never 500.

Why a middleware and not a check in each handler: a route added later (halt, close, the
console) is covered the day it is added, and a forgotten check cannot open a door. The rule:

- ``/health``, ``/metrics`` and ``/livez`` are open (orchestrators and Prometheus poll them),
  and so is the API's description (``/openapi.json``, ``/docs``: routes, no data);
- every other route needs ``Authorization: Bearer <VIGIL_API_TOKEN>`` once a token is set;
  ``VIGIL_API_PUBLIC_READS=true`` opens the reads (GET/HEAD) again, never a write;
- a write (any method but GET/HEAD/OPTIONS) is refused (403) while no token is configured,
  so an API started without one can be read but cannot change anything.

A page shell that carries no data (a browser cannot put a bearer token on a navigation) can
be let through for reads with ``allow_without_token(app, path)``: the exact path, or every
path under it when it ends with ``/``. Its data routes stay behind the token.

Unreadable input (a NUL byte in the query, which PostgreSQL cannot hold) is refused here,
and a database that is down answers 503 instead of an exception page.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from sqlalchemy.exc import SQLAlchemyError

from core.config import Settings

log = logging.getLogger(__name__)

# /livez: the container's liveness probe; /openapi.json and /docs describe the routes and
# carry no data (a browser cannot put a bearer token on a navigation)
OPEN_PATHS: frozenset[str] = frozenset({"/health", "/metrics", "/livez", "/openapi.json", "/docs"})
READ_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHELLS = web.AppKey("vigil_open_shells", list[str])


def _refuse(message: str, status: int) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _token(settings: Settings) -> str | None:
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    return token or None


def bearer_matches(request: web.Request, expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), expected.encode()
    )


def allow_without_token(app: web.Application, path: str) -> None:
    """Let reads of ``path`` (or, ending with ``/``, of every path under it) pass untokened."""
    app[SHELLS].append(path)


def _is_open(request: web.Request) -> bool:
    if request.method not in READ_METHODS:
        return False
    if request.path in OPEN_PATHS:
        return True
    for shell in request.app.get(SHELLS, []):
        if request.path == shell or (shell.endswith("/") and request.path.startswith(shell)):
            return True
    return False


def refusal(request: web.Request, settings: Settings) -> web.Response | None:
    """None when the request may pass the token rule; else the answer to send."""
    if _is_open(request):
        return None
    expected = _token(settings)
    is_read = request.method in READ_METHODS
    if expected is None:
        if is_read:
            return None
        return _refuse("state-changing endpoints are disabled: set VIGIL_API_TOKEN", 403)
    if is_read and settings.api_public_reads:
        return None
    if not bearer_matches(request, expected):
        return _refuse("missing or wrong bearer token", 401)
    return None


def _unreadable(request: web.Request) -> str | None:
    for key, value in request.query.items():
        if "\x00" in key or "\x00" in value:
            return f"query parameter {key!r:.40} holds a NUL byte"
    return None


def middleware(settings: Settings) -> Middleware:
    @web.middleware
    async def doors(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request, settings)
        if refused is not None:
            return refused
        bad = _unreadable(request)
        if bad is not None:
            return _refuse(bad, 400)
        try:
            return await handler(request)
        except SQLAlchemyError as exc:
            log.warning(
                "API request %s %s: database error: %s",
                request.method,
                request.path,
                type(exc).__name__,
            )
            return _refuse("database unavailable, try again", 503)

    return doors


def register(app: web.Application, settings: Settings) -> None:
    """Put the doors in front of every route of ``app`` (before it starts)."""
    app[SHELLS] = []
    app.middlewares.append(middleware(settings))
