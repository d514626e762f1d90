"""Per-symbol settings over HTTP: the same service as ``vigil settings``.

Routes (changes need ``Authorization: Bearer <VIGIL_API_TOKEN>``; reads follow the API's
token rule, core/api/doors.py):

  GET    /settings/symbols                  stored overrides (``?exchange=``)
  PUT    /settings/symbols/{symbol}         ``{"values": {"trailing_callback_percent": "1.0"},
                                            "exchange": "binance"}`` (exchange optional)
  DELETE /settings/symbols/{symbol}         ``?keys=a,b`` (default: every key), ``?exchange=``

``{symbol}`` ``*`` is the venue default. A bad key, value, venue or symbol answers 400 with
one line and stores nothing. Each change is the event ``symbol_settings_changed`` (old and
new values) and reaches every worker's next decision without a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from core.api.context import error_response, needs_token, requested_by
from core.api.control import DEPS
from core.domain.symbol_settings import (
    SymbolSettingError,
    Value,
    normalise_symbol,
    parse_keys,
    parse_value,
)
from core.services import symbol_settings as store


def register(app: web.Application) -> None:
    """Add the settings routes (called once from ``create_app``, after control's)."""
    app.router.add_get("/settings/symbols", show_route)
    app.router.add_put("/settings/symbols/{symbol}", set_route)
    app.router.add_delete("/settings/symbols/{symbol}", unset_route)


async def show_route(request: web.Request) -> web.Response:
    """The stored per-symbol overrides, venue defaults (``*``) first; ``?exchange=``."""
    exchange = request.query.get("exchange") or None
    rows = await asyncio.to_thread(store.show, exchange)
    return web.json_response({"settings": rows})


def _values(body: Any) -> dict[str, Value]:
    if not isinstance(body, dict) or not isinstance(body.get("values"), dict):
        raise SymbolSettingError('body must be {"values": {KEY: VALUE, ...}}')
    raw: dict[str, Any] = body["values"]
    if not raw:
        raise SymbolSettingError("nothing to set: values is empty")
    return {str(k): parse_value(str(k), v) for k, v in raw.items()}


@needs_token
async def set_route(request: web.Request) -> web.Response:
    """Override values for one symbol (or ``*``). Needs the bearer token."""
    try:
        body = await request.json()
    except ValueError:
        return error_response("body must be a JSON object")
    try:
        values = _values(body)
        exchange = body.get("exchange")
        if exchange is not None and not isinstance(exchange, str):
            raise SymbolSettingError("exchange must be a string")
        deps = request.app[DEPS]()
        venue, symbol = await asyncio.to_thread(
            store.check_target, deps, exchange, request.match_info["symbol"]
        )
    except SymbolSettingError as exc:
        return error_response(str(exc))
    change = await asyncio.to_thread(
        store.set_values, deps.redis, venue, symbol, values, requested_by(request), deps.uow
    )
    return web.json_response(change.as_dict())


@needs_token
async def unset_route(request: web.Request) -> web.Response:
    """Remove overrides of one symbol (``?keys=a,b``; default every key). Needs the token."""
    deps = request.app[DEPS]()
    keys_text = request.query.get("keys", "")
    try:
        keys = parse_keys([k.strip() for k in keys_text.split(",") if k.strip()]) or None
        venue = store.check_venue(
            deps.settings, request.query.get("exchange") or deps.exchange_name
        )
        symbol = normalise_symbol(request.match_info["symbol"])
    except SymbolSettingError as exc:
        return error_response(str(exc))
    change = await asyncio.to_thread(
        store.unset_values, deps.redis, venue, symbol, keys, requested_by(request), deps.uow
    )
    return web.json_response(change.as_dict())
