"""Operator control over HTTP: halt, resume, close one position, close all.

Routes (all POSTs need ``Authorization: Bearer <VIGIL_API_TOKEN>``, checked exactly as for
``POST /tasks/<name>``; disabled (403) while no token is configured):

  GET  /halt                    the halts in force (``{"halted": bool, "halts": [...]}``)
  POST /halt                    ``{"reason": "..."}`` (optional): stop new openings
  POST /resume                  lift every halt in force
  POST /positions/{id}/close    close one position at market (reason ``manual``); 404 if
                                there is no such position, 409 if it is already finished,
                                502 if the venue did not close it (it keeps its stop)
  POST /close-all               halt, then close every position of every venue of the
                                deployment (``?exchange=bybit``: of that venue only);
                                ``?dry_run=true`` only lists what it would close

Each runs the same service as the CLI (core/services/halts.py, manual_close.py), in a
thread: a close waits for the venue's answer, so the reply says what really happened.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from core.api.context import (
    CONTEXT,
    error_response,
    json_object_body,
    needs_token,
    requested_by,
)
from core.domain.halts import HaltSource
from core.domain.positions import TERMINAL, PositionStatus
from core.services import halts, manual_close
from core.services.deps import Deps

DepsFactory = Callable[[], Deps]
DEPS: web.AppKey[DepsFactory] = web.AppKey("vigil_control_deps")


class HaltCollector(Collector):
    """``vigil_halted{source}``: halts in force by source (operator, auth, maintenance)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "vigil_halted",
            "Halts in force by source; any non-zero means no new position opens.",
            labels=["source"],
        )
        try:
            current = halts.current()
        except SQLAlchemyError:
            return  # the database's own metrics say it is gone
        counts = Counter(h.source for h in current)
        for source in HaltSource:
            gauge.add_metric([source.value], counts.get(source.value, 0))
        yield gauge


def register(app: web.Application, deps_factory: Callable[[], Deps]) -> None:
    """Add the control routes to ``app`` and the halt gauge to its metrics (called once
    from ``create_app``)."""
    app[DEPS] = deps_factory
    app[CONTEXT].registry.register(HaltCollector())
    app.router.add_get("/halt", halt_state_route)
    app.router.add_post("/halt", halt_route)
    app.router.add_post("/resume", resume_route)
    app.router.add_post(r"/positions/{position_id:\d+}/close", close_route)
    app.router.add_post("/close-all", close_all_route)


async def halt_state_route(request: web.Request) -> web.Response:
    """The halts in force: ``{"halted": bool, "halts": [...]}``."""
    current = await asyncio.to_thread(halts.current)
    return web.json_response({"halted": bool(current), "halts": [h.as_dict() for h in current]})


@needs_token
async def halt_route(request: web.Request) -> web.Response:
    """Stop new openings (body ``{"reason": "..."}``, optional). Needs the bearer token."""
    ctx = request.app[CONTEXT]
    body = await json_object_body(request)
    if isinstance(body, web.Response):
        return body
    reason = body.get("reason", "halted through the API")
    if not isinstance(reason, str) or not reason.strip():
        return error_response("reason must be a non-empty string")
    result = await asyncio.to_thread(halts.halt, reason, requested_by(request), now=ctx.clock.now())
    return web.json_response(
        {"halted": True, "created": result.created, "halt": result.halt.as_dict()}
    )


@needs_token
async def resume_route(request: web.Request) -> web.Response:
    """Lift every halt in force. Needs the bearer token."""
    ctx = request.app[CONTEXT]
    lifted = await asyncio.to_thread(halts.resume, requested_by(request), now=ctx.clock.now())
    return web.json_response({"halted": False, "resumed": [h.as_dict() for h in lifted]})


@needs_token
async def close_route(request: web.Request) -> web.Response:
    """Close one position at market (reason ``manual``): 404 no such position, 409 already
    finished or on another venue, 502 the venue did not close it (it keeps its stop).
    Needs the bearer token."""
    position_id = int(request.match_info["position_id"])
    deps = request.app[DEPS]()
    try:
        before = await asyncio.to_thread(manual_close.target, position_id, deps.unit_of_work)
    except manual_close.PositionNotFound as exc:
        return error_response(str(exc), 404)
    if PositionStatus(before.status) in TERMINAL:
        return error_response(f"position {position_id} is already {before.status}", 409)
    if before.exchange != deps.exchange_name:
        from core.services.deps import VenueNotConfigured, deps_for

        try:
            deps = deps_for(before.exchange)  # another venue of VIGIL_EXCHANGES
        except VenueNotConfigured:
            return error_response(
                f"position {position_id} is on {before.exchange}, not on this venue", 409
            )
    result = await asyncio.to_thread(manual_close.close_one, deps, position_id)
    return web.json_response(result.as_dict(), status=200 if result.closed else 502)


@needs_token
async def close_all_route(request: web.Request) -> web.Response:
    """Halt, then close every position of every venue (``?exchange=X``: that venue's);
    ``?dry_run=true`` only lists what it would close. 502 when any close failed, 400 for a
    venue the deployment does not trade. Needs the bearer token."""
    try:
        venues = _venues(request.app[DEPS](), request.query.get("exchange"))
    except LookupError as exc:
        return error_response(str(exc), 400)
    if request.query.get("dry_run", "").lower() in ("1", "true", "yes"):
        targets = [target for deps in venues for target in await asyncio.to_thread(_targets, deps)]
        return web.json_response({"dry_run": True, "positions": [t.as_dict() for t in targets]})
    report = await asyncio.to_thread(manual_close.close_every_venue, venues, requested_by(request))
    return web.json_response(report.as_dict(), status=200 if report.all_closed else 502)


def _venues(default: Deps, only: str | None) -> list[Deps]:
    """The Deps of each venue to act on: every configured venue, or ``only``."""
    from core.services.deps import deps_for
    from core.venues import configured_venues

    names = configured_venues(default.settings)
    if only is not None:
        if only not in names:
            raise LookupError(f"venue {only!r} is not configured (VIGIL_EXCHANGES)")
        names = (only,)
    return [default if name == default.exchange_name else deps_for(name) for name in names]


def _targets(deps: Deps) -> list[manual_close.CloseTarget]:
    with deps.unit_of_work() as session:
        return manual_close.open_targets(session, deps.exchange_name)
