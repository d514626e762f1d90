"""``vigil api``: health, Prometheus metrics, read-only positions and events, task triggers.

Why aiohttp: it is already a dependency (ccxt's async client and the paper exchange use it),
it serves a handful of JSON routes and one text route without a framework's weight, and its
test server runs in-process. Blocking work (SQL, the exchange, Redis) runs in threads, so one
slow component cannot stall the others or the event loop.

Routes:
  GET  /health             200 or 503, per-component status (core/services/health.py)
  GET  /metrics            Prometheus text format
  GET  /positions          ?symbol= &status= (comma list) &since= &correlation_id= &limit=
  GET  /events             ?symbol= &type= (comma list) &severity= &since= &correlation_id=
                           &position_id= &limit=
  GET  /tasks              registered task names
  GET  /console            the operator console (core/api/console); a browser asking for /
                           is sent there
  POST /tasks/{name}       send a task (JSON body = kwargs, checked against the task's
                           signature: 400 with the reason)

The token rule covers every route (core/api/doors.py): with ``VIGIL_API_TOKEN`` set, all but
/health and /metrics need ``Authorization: Bearer <token>`` (``VIGIL_API_PUBLIC_READS`` opens
the GETs); without one, every write is refused (403). ``vigil api`` also runs the watchdog
that pages when a part of the system goes blind (core/services/paging.py).

Celery is not imported here (core stays free of it): the CLI wires in ``worker_ping``,
``task_sender`` and ``task_names``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.orm import Session

from core.api import console, doors, openapi
from core.api.collectors import StateCollector
from core.api.context import (
    CONTEXT,
    ApiContext,
    TaskChecker,
    TaskNames,
    TaskSender,
    error_response,
    json_object_body,
    needs_token,
)
from core.api.queries import (
    BadQuery,
    EventFilter,
    PositionFilter,
    event_dict,
    list_events,
    list_positions,
    parse_id,
    parse_limit,
    parse_since,
    position_dict,
)
from core.api.task_args import BadTaskArguments
from core.api.task_names import AmbiguousTask, UnknownTask, resolve_task_name
from core.clock import SYSTEM_CLOCK, Clock
from core.config import Settings
from core.db.session import new_session
from core.endpoints import resolve_redis_url
from core.metrics import MetricsStore, RedisCollector
from core.queues import QUEUES, QueueCollector, venue_queues
from core.services.deps import Deps, get_deps
from core.services.health import ExchangeReads, HealthChecker, WorkerPing

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    deps_factory: Callable[[], Deps] = get_deps,
    redis_client: redis.Redis | None = None,
    worker_ping: WorkerPing | None = None,
    task_sender: TaskSender | None = None,
    task_names: TaskNames | None = None,
    exchange_name: str | None = None,
    task_checker: TaskChecker | None = None,
) -> web.Application:
    client = redis_client or redis.Redis.from_url(
        resolve_redis_url(settings), socket_timeout=settings.health_check_timeout
    )
    reads = ExchangeReads(deps_factory, settings.health_cache_seconds)
    exchange = exchange_name or deps_factory().exchange_name
    health = HealthChecker(
        settings, clock, deps_factory, client, reads, worker_ping, exchange_name=exchange
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(MetricsStore(client)))
    registry.register(StateCollector(exchange, reads, clock))
    from core.api.venue_health import VenueCollector  # imports the health module

    registry.register(VenueCollector(settings, reads, exchange))  # one series per venue
    # depth and oldest age per queue, a venue's own queues (VIGIL_VENUE_QUEUES) included
    own = [queue for venue in settings.venue_queues for queue in venue_queues(venue)]
    registry.register(QueueCollector(client, clock, [*QUEUES, *own]))
    app = web.Application()
    app[CONTEXT] = ApiContext(
        settings, clock, health, registry, task_sender, task_names, task_checker
    )
    doors.register(app, settings)
    console.register(app, settings, clock, health)  # after the doors: opens its shells
    for path, handler in (
        ("/", index),
        ("/health", health_route),
        ("/metrics", metrics_route),
        ("/positions", positions_route),
        ("/events", events_route),
        ("/tasks", tasks_route),
    ):
        app.router.add_get(path, handler)
    app.router.add_post("/tasks/{name}", trigger_route)
    from core.api import control  # halt, resume, close by hand; imports this module

    control.register(app, deps_factory)
    from core.api import symbol_settings  # per-symbol settings; imports this module

    symbol_settings.register(app)
    openapi.register(app)  # /openapi.json, /docs (generated from the routes), /livez
    return app


async def index(request: web.Request) -> web.Response:
    """The main routes; /openapi.json describes every one, /docs shows them."""
    return web.json_response(
        {
            "endpoints": [
                "/health",
                "/metrics",
                "/positions",
                "/events",
                "/tasks",
                "POST /tasks/{name}",
                "/console",
                "/openapi.json",
                "/docs",
            ]
        }
    )


async def health_route(request: web.Request) -> web.Response:
    """The system's health per component (database, Redis, workers, beat, ingest, exchange,
    protection): 200 when every one is fine, 503 otherwise, with each one's detail."""
    report = await request.app[CONTEXT].health.check()
    return web.json_response(report.as_dict(), status=200 if report.healthy else 503)


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus metrics (text format): tasks, exchange calls, positions, queue depths."""
    body = await asyncio.to_thread(generate_latest, request.app[CONTEXT].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


async def positions_route(request: web.Request) -> web.Response:
    """Positions, newest first. Query: symbol, status (comma list), since (ISO time or
    duration such as 1h), correlation_id, limit."""
    ctx, q = request.app[CONTEXT], request.query
    try:
        f = PositionFilter(
            symbol=q.get("symbol"),
            statuses=_list(q.get("status")),
            since=parse_since(q.get("since"), ctx.clock.now()),
            correlation_id=q.get("correlation_id"),
            limit=parse_limit(q.get("limit")),
        )
    except BadQuery as exc:
        return error_response(str(exc))

    return await _listed("positions", lambda s: [position_dict(p) for p in list_positions(s, f)])


async def _listed(key: str, rows: Callable[[Session], list[dict[str, Any]]]) -> web.Response:
    """``{key: rows}``, read in a session of its own off the event loop."""

    def read() -> list[dict[str, Any]]:
        with new_session() as session:
            return rows(session)

    return web.json_response({key: await asyncio.to_thread(read)})


async def events_route(request: web.Request) -> web.Response:
    """Events, newest first. Query: symbol, type (comma list), severity, since (ISO time or
    duration such as 1h), correlation_id, position_id, limit."""
    ctx, q = request.app[CONTEXT], request.query
    try:
        position = q.get("position_id")
        f = EventFilter(
            symbol=q.get("symbol"),
            types=_list(q.get("type")),
            severity=q.get("severity"),
            since=parse_since(q.get("since"), ctx.clock.now()),
            correlation_id=q.get("correlation_id"),
            position_id=parse_id(position, "position_id"),
            limit=parse_limit(q.get("limit")),
        )
    except (BadQuery, ValueError) as exc:
        return error_response(str(exc))

    return await _listed("events", lambda s: [event_dict(e) for e in list_events(s, f)])


async def tasks_route(request: web.Request) -> web.Response:
    """Names of the registered tasks that POST /tasks/{name} can send."""
    names = request.app[CONTEXT].task_names
    return web.json_response({"tasks": sorted(names()) if names else []})


@needs_token
async def trigger_route(request: web.Request) -> web.Response:
    """Send task {name} (full or short name) now; the JSON body holds its keyword arguments.
    Answers 202 with the task id; its result is kept for an hour. Needs the bearer token."""
    ctx = request.app[CONTEXT]
    if ctx.task_sender is None or ctx.task_names is None or ctx.task_checker is None:
        return error_response("task sending is not wired into this API", 503)
    try:
        name = resolve_task_name(request.match_info["name"], ctx.task_names())
    except (UnknownTask, AmbiguousTask) as exc:
        return error_response(str(exc), 404)
    kwargs = await json_object_body(request, what="a JSON object of task keyword arguments")
    if isinstance(kwargs, web.Response):
        return kwargs
    try:
        ctx.task_checker(name, kwargs)
    except BadTaskArguments as exc:
        return error_response(str(exc))
    task_id = await asyncio.to_thread(ctx.task_sender, name, kwargs)
    log.info("task %s sent through the API (id %s)", name, task_id)
    return web.json_response({"task": name, "id": task_id}, status=202)


def run_api(
    settings: Settings, *, host: str | None = None, port: int | None = None, **wiring: Any
) -> None:
    """Serve until interrupted."""
    from core.services.deadman import register_api_watchdog

    app = create_app(settings, **wiring)
    register_api_watchdog(app, app[CONTEXT].health, settings)  # pages when a part goes blind
    host, port = host or settings.api_host, port or settings.api_port
    log.info("vigil api on http://%s:%s", host, port)
    web.run_app(app, host=host, port=port, print=None, access_log=log)
