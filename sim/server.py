"""The paper exchange's HTTP/WebSocket server: one aiohttp app, one port.

`/fapi/...` is dispatched to `sim.rest` through one handler that does what Binance's
gateway does around every call: weight accounting and headers, the request log, fault
injection, authentication and Binance-shaped error bodies. Malformed input always gets
a Binance error JSON (never a traceback), and the server keeps serving.

Run it: `python -m sim.server --port 8900` (or `vigil sim`), or in-process with
`sim.runner.SimServer` for tests. `--dialect bybit` serves Bybit's v5 API instead
(`sim/bybit/`): one instance is one venue account.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from sim import admin, errors
from sim.admin import HUB_KEY, STATE_KEY
from sim.errors import SimError
from sim.faults import FaultPlan
from sim.persist import add_persistence
from sim.requestlog import weight_of
from sim.rest import ROUTES, SIGNED, USER_STREAM, Ctx, Route
from sim.serving import hold_or_drop, serve_until_signal
from sim.state import SimOptions, SimState
from sim.tick_loop import add_tick_loop
from sim.ws import StreamHub

log = logging.getLogger("sim.server")
NAME = "paper exchange"
ROUTE_MAP: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES}
KNOWN_PATHS = frozenset(r.path for r in ROUTES)


def _params(raw_query: str, raw_body: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for raw in (raw_query, raw_body):
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key in params:
                raise SimError(-1101, f"Duplicate values for parameter '{key}'.")
            params[key] = value
    return params


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def _terminal_response(plan: FaultPlan) -> web.Response:
    rule = plan.terminal
    assert rule is not None
    if rule.kind == "rate_limit":
        response = _json(errors.RATE_LIMIT.body(), 429)
        response.headers["Retry-After"] = "1"
        return response
    if rule.kind == "ban":
        return _json({"code": -1003, "msg": "Way too many requests; IP banned."}, 418)
    if rule.body == "json":
        return _json(errors.UNKNOWN.body(), rule.status)
    # What a gateway in front of the matching engine answers: not Binance JSON.
    text = f"<html><body><h1>{rule.status} Service Unavailable</h1></body></html>"
    return web.Response(text=text, status=rule.status, content_type="text/html")


def _authenticate(state: SimState, route: Route, request: web.Request, ctx: Ctx, body: str) -> None:
    key = request.headers.get("X-MBX-APIKEY")
    if route.security == SIGNED:
        state.auth.check_signed(key, request.query_string, body, ctx.params)
    elif route.security == USER_STREAM:
        state.auth.check_key(key)


async def _dispatch(request: web.Request, state: SimState, plan: FaultPlan) -> web.Response:
    try:
        raw_body = await request.text() if request.body_exists else ""
    except UnicodeDecodeError:
        return _json(errors.illegal("body").body(), 400)
    route = ROUTE_MAP.get((request.method, request.path))
    if route is None:
        if request.path in KNOWN_PATHS:
            return _json({"code": -1014, "msg": "Unsupported order combination."}, 405)
        return _json(
            {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"}, 404
        )
    try:
        ctx = Ctx(state, _params(request.query_string, raw_body), plan)
        _authenticate(state, route, request, ctx, raw_body)
        return _json(route.handler(ctx))
    except SimError as exc:
        return _json(exc.body(), exc.status)


async def fapi(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    has_symbol = "symbol=" in request.query_string or request.method in ("POST", "PUT")
    entry = state.log.record(
        request.method, request.path, weight_of(request.method, request.path, has_symbol)
    )
    plan = state.faults.plan(request.method, request.path)
    entry.fault = ",".join(plan.kinds) or None
    if request.body_exists:
        # the whole request has arrived before the exchange "thinks": a client that dies
        # during added latency has still sent an order that will execute
        await request.read()
    if plan.latency_ms:
        await asyncio.sleep(plan.latency_ms / 1000)
    limit = state.options.weight_limit
    if plan.terminal is not None:
        response = _terminal_response(plan)
    elif limit is not None and state.log.used_weight() > limit:
        response = _json(errors.RATE_LIMIT.body(), 429)
    else:
        try:
            response = await _dispatch(request, state, plan)
        except Exception:  # a simulator bug must not look like an exchange answer
            log.exception("internal error on %s %s", request.method, request.path)
            response = _json({"code": -1000, "msg": "Internal error of the simulator."}, 500)
    entry.status = response.status
    if response.status >= 400 and isinstance(response, web.Response) and response.text:
        with contextlib.suppress(ValueError, AttributeError):
            entry.code = json.loads(response.text).get("code")
    response.headers["X-MBX-USED-WEIGHT-1M"] = str(state.log.used_weight())
    response.headers["X-MBX-ORDER-COUNT-1M"] = str(state.log.order_count())
    if plan.timeout is not None:
        return await _swallow(request, plan)
    return response


async def _swallow(request: web.Request, plan: FaultPlan) -> web.StreamResponse:
    await hold_or_drop(request, plan)
    return _json(errors.UNKNOWN.body(), 504)


async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return await request.app[HUB_KEY].serve(request, state.listen_keys)


DIALECTS = ("binance", "bybit")


def build_app(options: SimOptions | None = None) -> web.Application:
    """The whole simulator as an aiohttp application (state lives on the app)."""
    options = options or SimOptions()
    if options.dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {options.dialect!r}; expected one of {DIALECTS}")
    if options.dialect == "bybit":
        from sim.bybit.server import build_bybit_app

        return build_bybit_app(options)
    hub = StreamHub()
    app = web.Application(client_max_size=1024 * 1024)
    app[HUB_KEY] = hub
    app[STATE_KEY] = SimState(options, hub.publish_user)
    add_persistence(app, app[STATE_KEY])
    app.router.add_route("*", "/fapi/{tail:.*}", fapi)
    admin.register(app)
    for prefix in ("", "/market", "/public", "/private"):
        app.router.add_get(prefix + "/ws", websocket)
        app.router.add_get(prefix + "/ws/{tail:.*}", websocket)
        app.router.add_get(prefix + "/stream", websocket)
    add_tick_loop(app)
    return app


def options_from(
    *,
    seed: int = 1,
    symbols: list[str] | None = None,
    scenario: str | None = None,
    api_key: str = "paper",
    api_secret: str = "paper",  # noqa: S107 - the documented paper-exchange default
    tick_interval: float = 1.0,
    dialect: str = "binance",
    state_path: Path | None = None,
) -> SimOptions:
    if not 0.05 <= tick_interval <= 60:
        raise ValueError("tick_interval must be between 0.05 and 60 seconds")
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    return SimOptions(
        seed=seed,
        symbols=symbols,
        scenario=scenario,
        api_key=api_key,
        api_secret=api_secret,
        tick_interval=tick_interval,
        dialect=dialect,
        state_path=state_path,
    )


def serve(host: str, port: int, **options: Any) -> None:
    """Run the paper exchange until SIGINT/SIGTERM (the `vigil sim` entry point); the
    options and their defaults are those of ``options_from``."""
    app = build_app(options_from(**options))
    url = f"http://{host}:{port}"
    asyncio.run(serve_until_signal(app, host, port, name=NAME, url=url, logger=log))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--symbols", default="", help="comma-separated, default: all")
    parser.add_argument("--scenario", default=None, help="frozen|calm|normal|volatile|FILE.csv")
    parser.add_argument("--api-key", default="paper")
    parser.add_argument("--api-secret", default="paper")
    parser.add_argument("--tick-interval", type=float, default=1.0)
    parser.add_argument("--dialect", choices=DIALECTS, default="binance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    symbols = [s for s in args.symbols.split(",") if s.strip()] or None
    serve(
        args.host,
        args.port,
        seed=args.seed,
        symbols=symbols,
        scenario=args.scenario,
        api_key=args.api_key,
        api_secret=args.api_secret,
        tick_interval=args.tick_interval,
        dialect=args.dialect,
    )


if __name__ == "__main__":
    main()
