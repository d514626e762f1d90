"""What every route module of the API shares: the context the app carries, the bearer-token
check of state-changing routes, and the shape of an error answer. Its own module so that the
route modules (control, symbol settings) and the app that registers them import it, not
each other."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from core.clock import Clock
from core.config import Settings
from core.services.health import HealthChecker

TaskSender = Callable[[str, dict[str, Any]], str]
TaskNames = Callable[[], list[str]]
TaskChecker = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class ApiContext:
    settings: Settings
    clock: Clock
    health: HealthChecker
    registry: CollectorRegistry
    task_sender: TaskSender | None
    task_names: TaskNames | None
    task_checker: TaskChecker | None = None


CONTEXT = web.AppKey("vigil", ApiContext)


def error_response(message: str, status: int = 400) -> web.Response:
    """A JSON error body: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


async def json_object_body(
    request: web.Request, *, what: str = "a JSON object"
) -> dict[str, Any] | web.Response:
    """The request's body as a JSON object (``{}`` when it has none), or the 400 to answer:
    every route that takes named arguments in its body reads them the same way."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return error_response(f"body must be {what}")
    if not isinstance(body, dict):
        return error_response(f"body must be {what}")
    return body


Handler = Callable[[web.Request], Awaitable[web.Response]]


def needs_token(handler: Handler) -> Handler:
    """A state-changing route: it runs only for a request with the bearer token; any other
    gets ``authorized``'s refusal (403 while no token is configured, 401 otherwise)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        refused = authorized(request, request.app[CONTEXT].settings)
        if refused is not None:
            return refused
        return await handler(request)

    return guarded


def requested_by(request: web.Request) -> str:
    """Who a state change is recorded as made by: the API and the caller's address."""
    return f"api:{request.remote or '?'}"


def authorized(request: web.Request, settings: Settings) -> web.Response | None:
    """None when the bearer token matches; else the refusal to send."""
    if settings.api_token is None or not settings.api_token.get_secret_value():
        return error_response("state-changing endpoints are disabled: set VIGIL_API_TOKEN", 403)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.api_token.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None
