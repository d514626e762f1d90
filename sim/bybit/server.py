"""The Bybit v5 dialect of the paper exchange as one aiohttp application, one port.

`/v5/...` REST goes through one gateway handler that does what Bybit's gateway does around
every call: the request log, fault injection, signature check, the per-UID order rate
limit (10006 with `X-Bapi-Limit*` headers) and the `retCode` envelope. WebSocket streams
are served at `/v5/public/linear` and `/v5/private`; the admin API at `/_sim/...`.

Why a separate instance rather than Bybit paths on the Binance port: one simulator
instance is one venue account (its own positions, balance, order ids, rate limits and
admin API), exactly as a Binance and a Bybit account are separate in the real world. Run
`vigil sim --dialect bybit` (or `SimOptions(dialect="bybit")`) next to a Binance one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from sim.admin import HUB_KEY, STATE_KEY
from sim.bybit import admin, errors
from sim.bybit.errors import BybitError, envelope
from sim.bybit.rest import ROUTES, Call, Route
from sim.bybit.state import BybitState
from sim.bybit.ws import BybitStreamHub
from sim.faults import FaultPlan
from sim.persist import add_persistence
from sim.serving import hold_or_drop
from sim.state import SimOptions
from sim.tick_loop import add_tick_loop

log = logging.getLogger("sim.bybit")
ROUTE_MAP: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES}
KNOWN_PATHS = frozenset(r.path for r in ROUTES)


def _state(request: web.Request) -> BybitState:
    state = request.app[STATE_KEY]
    assert isinstance(state, BybitState)
    return state


def _json(body: dict[str, Any], state: BybitState, status: int = 200) -> web.Response:
    if state.settings.retcode_as_string:
        body = {**body, "retCode": str(body.get("retCode", 0))}
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def _params(request: web.Request, raw_body: str) -> dict[str, Any]:
    if request.method == "GET":
        params: dict[str, Any] = {}
        for key, value in parse_qsl(request.query_string, keep_blank_values=True):
            if key in params:
                raise errors.params(f"duplicate parameter {key}")
            params[key] = value
        return params
    try:
        body = json.loads(raw_body or "{}")
    except json.JSONDecodeError as exc:
        raise errors.params("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise errors.params("request body must be a JSON object")
    return body


def _terminal(plan: FaultPlan, state: BybitState) -> web.Response:
    rule = plan.terminal
    assert rule is not None
    if rule.kind == "rate_limit":
        response = _json(errors.RATE_LIMIT.body(), state)
        response.headers["X-Bapi-Limit-Status"] = "0"
        return response
    if rule.kind == "ban":  # Bybit's IP limit: 403 from the gateway, not JSON
        return web.Response(text="access too frequent", status=403)
    if rule.body == "json":
        return _json(errors.SYSTEM.body(), state, rule.status)
    text = f"<html><body><h1>{rule.status} Service Unavailable</h1></body></html>"
    return web.Response(text=text, status=rule.status, content_type="text/html")


async def _dispatch(request: web.Request, state: BybitState, plan: FaultPlan) -> web.Response:
    route = ROUTE_MAP.get((request.method, request.path))
    if route is None:
        return _json(errors.PATH_NOT_FOUND.body(), state, 404)
    raw_body = await request.text() if request.body_exists else ""
    headers: dict[str, str] = {}
    try:
        params = _params(request, raw_body)
        if route.private:
            payload = raw_body if request.method == "POST" else request.query_string
            state.bybit_auth.check(request.headers, payload)
        limit = state.settings.order_rate_limit
        if route.order_limited and limit is not None:
            status = state.limiter.admit(route.path, limit)
            headers = {
                "X-Bapi-Limit": str(status.limit),
                "X-Bapi-Limit-Status": str(status.remaining),
                "X-Bapi-Limit-Reset-Timestamp": str(status.reset_ms),
            }
            if not status.allowed:
                raise errors.RATE_LIMIT
        response = _json(envelope(route.handler(Call(state, params, plan))), state)
    except BybitError as exc:
        response = _json(exc.body(), state, exc.status)
    response.headers.update(headers)
    return response


def _market_order(request: web.Request, body: bytes) -> bool | None:
    """Whether an ``order/create`` call places a market order (not a stop or a limit); None
    for any other call. Entries and stops share the endpoint: a fill fault waits for the
    former."""
    if request.method != "POST" or not request.path.endswith("/order/create"):
        return None
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(params, dict):
        return None
    trigger = params.get("triggerPrice")
    conditional = trigger not in (None, "", "0", 0)
    return str(params.get("orderType", "")).lower() == "market" and not conditional


async def v5(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    entry = state.log.record(request.method, request.path, 1)
    body = b""
    if request.body_exists:
        body = await request.read()  # the request has fully arrived before the exchange "thinks"
    plan = state.faults.plan(request.method, request.path, _market_order(request, body))
    entry.fault = ",".join(plan.kinds) or None
    if plan.latency_ms:
        await asyncio.sleep(plan.latency_ms / 1000)
    if plan.terminal is not None:
        response = _terminal(plan, state)
    else:
        try:
            response = await _dispatch(request, state, plan)
        except Exception:  # a simulator bug must not look like an exchange answer
            log.exception("internal error on %s %s", request.method, request.path)
            response = _json(errors.SYSTEM.body(), state, 500)
    entry.status = response.status
    if response.text and response.content_type == "application/json":
        code = json.loads(response.text).get("retCode")
        entry.code = int(code) if code not in (None, 0, "0") else None
    if plan.timeout is not None:
        return await _swallow(request, plan, state)
    return response


async def _swallow(request: web.Request, plan: FaultPlan, state: BybitState) -> web.StreamResponse:
    await hold_or_drop(request, plan)
    return _json(errors.SYSTEM.body(), state, 504)


async def public_stream(request: web.Request) -> web.StreamResponse:
    if request.match_info["category"] != "linear":
        raise web.HTTPNotFound(text="only the linear public stream is simulated")
    hub = request.app[HUB_KEY]
    assert isinstance(hub, BybitStreamHub)
    return await hub.serve_v5(request, _state(request), private=False)


async def private_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    assert isinstance(hub, BybitStreamHub)
    return await hub.serve_v5(request, _state(request), private=True)


def build_bybit_app(options: SimOptions) -> web.Application:
    """The Bybit v5 simulator as an aiohttp application (state lives on the app)."""

    hub = BybitStreamHub()
    app = web.Application(client_max_size=1024 * 1024)
    app[HUB_KEY] = hub
    app[STATE_KEY] = BybitState(options, hub.publish_topic)
    add_persistence(app, app[STATE_KEY])
    # streams first: the REST catch-all below would shadow them
    app.router.add_get("/v5/public/{category}", public_stream)
    app.router.add_get("/v5/private", private_stream)
    app.router.add_route("*", "/v5/{tail:.*}", v5)
    admin.register(app)
    add_tick_loop(app)
    return app
