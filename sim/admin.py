"""Admin API (`/_sim/...`, JSON): drive prices, act "by hand", inject faults, inspect.

Tests and chaos runs use it to create the situations the engine must survive: a position
closed by hand, a stop the engine did not place, a price gap through a stop, a lost
response. It needs no key: the simulator is a local test tool.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from sim import errors, views
from sim.errors import SimError
from sim.faults import parse_rule
from sim.orders import OrderRequest, fmt
from sim.state import SimState
from sim.ws import StreamHub

STATE_KEY: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
HUB_KEY: web.AppKey[StreamHub] = web.AppKey("sim_hub", StreamHub)
SIDE_ALIASES = {"BUY": "BUY", "LONG": "BUY", "SELL": "SELL", "SHORT": "SELL"}


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SimError(-1100, "Body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise SimError(-1100, "Body must be a JSON object.")
    return data


def _decimal(body: dict[str, Any], key: str, *, required: bool = True) -> Decimal | None:
    value = body.get(key)
    if value is None:
        if required:
            raise errors.missing(key)
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise errors.illegal(key) from exc
    if not number.is_finite():
        raise errors.illegal(key)
    return number


def _symbol(state: SimState, body: dict[str, Any]) -> str:
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise errors.missing("symbol")
    symbol = symbol.upper()
    state.engine.market(symbol)
    return symbol


def _side(body: dict[str, Any]) -> str:
    side = SIDE_ALIASES.get(str(body.get("side", "")).upper())
    if side is None:
        raise errors.BAD_SIDE
    return side


def _positive(value: Decimal | None, key: str) -> Decimal:
    if value is None or value <= 0:
        raise errors.illegal(key)
    return value


async def set_price(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    price = _positive(_decimal(body, "price"), "price")
    return {"symbol": symbol, "price": fmt(state.set_price(symbol, price))}


async def set_path(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    target = _positive(_decimal(body, "target"), "target")
    seconds = float(_positive(_decimal(body, "seconds"), "seconds"))
    state.prices.set_path(symbol, target, seconds)
    return {"symbol": symbol, "target": fmt(target), "seconds": seconds}


async def set_volatility(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body) if body.get("symbol") else None
    volatility = _decimal(body, "volatility")
    drift = _decimal(body, "drift", required=False) or Decimal(0)
    if volatility is None or volatility < 0:
        raise errors.illegal("volatility")
    state.prices.set_walk(symbol, float(volatility), float(drift))
    return {"symbol": symbol, "volatility": float(volatility), "drift": float(drift)}


async def tick(request: web.Request, state: SimState) -> Any:
    """Advance prices by N ticks now (deterministic tests need no wall-clock waiting)."""
    body = await _body(request)
    count = body.get("count", 1)
    if not isinstance(count, int) or not 1 <= count <= 100_000:
        raise errors.illegal("count")
    for _ in range(count):
        state.step()
    return {"ticks": state.prices.ticks, "prices": _prices(state)}


def _clock(state: SimState) -> dict[str, Any]:
    return {
        "paused": state.paused,
        "ticks": state.prices.ticks,
        "tick_interval": state.options.tick_interval,
    }


async def get_clock(request: web.Request, state: SimState) -> Any:
    return _clock(state)


async def set_clock(request: web.Request, state: SimState) -> Any:
    """Stop or restart the wall-clock ticks; `/_sim/tick` still steps prices while stopped.

    A test that compares ticks or price paths stops the clock first, so no tick of the
    background loop lands between its calls (it does on a loaded machine).
    """
    body = await _body(request)
    paused = body.get("paused")
    if not isinstance(paused, bool):
        raise errors.illegal("paused")
    state.paused = paused
    return _clock(state)


async def open_position(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    side = _side(body)
    qty = _positive(_decimal(body, "quantity"), "quantity")
    order = state.engine.force_fill(symbol, side, qty)
    return order.to_api()


async def close_position(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    symbol = _symbol(state, body)
    order = state.engine.close_by_hand(symbol)
    return {"closed": order is not None, "order": order.to_api() if order else None}


async def manual_order(request: web.Request, state: SimState) -> Any:
    """Place an order as if by hand in the UI (same validation as the API)."""
    body = await _body(request)
    req = OrderRequest(
        symbol=_symbol(state, body),
        side=_side(body),
        type=str(body.get("type", "MARKET")).upper(),
        quantity=_decimal(body, "quantity", required=False) or Decimal(0),
        price=_decimal(body, "price", required=False),
        trigger_price=_decimal(body, "triggerPrice", required=False)
        or _decimal(body, "stopPrice", required=False),
        reduce_only=bool(body.get("reduceOnly", False)),
        close_position=bool(body.get("closePosition", False)),
        working_type=str(body.get("workingType", "MARK_PRICE")).upper(),
        client_id=str(body.get("clientOrderId") or ""),
    )
    if req.type in ("MARKET", "LIMIT"):
        return state.engine.place_order(req).to_api()
    return state.engine.place_algo(req).to_api()


async def add_fault(request: web.Request, state: SimState) -> Any:
    rule = parse_rule(await _body(request))
    state.faults.add(rule)
    return {"faults": state.faults.describe()}


async def clear_faults(request: web.Request, state: SimState) -> Any:
    state.faults.clear()
    return {"faults": []}


async def list_faults(request: web.Request, state: SimState) -> Any:
    return {"faults": state.faults.describe()}


def key_pair(body: dict[str, Any]) -> tuple[str, str]:
    """``{"api_key", "api_secret"}``: two non-empty strings."""
    pair = body.get("api_key"), body.get("api_secret")
    for name, value in zip(("api_key", "api_secret"), pair, strict=True):
        if not isinstance(value, str) or not value:
            raise errors.missing(name)
    return str(pair[0]), str(pair[1])


async def set_keys(request: web.Request, state: SimState) -> Any:
    """Replace the accepted key pair: the old key is revoked at once (the venue's refusal,
    -2015 / 10003, from now on)."""
    key, secret = key_pair(await _body(request))
    for keys in state.key_pairs():
        keys.replace(key, secret)
    state.options.api_key = key
    return {"api_key": key}


async def reset(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    for keys in state.key_pairs():
        keys.restore()
    state.options.api_key = state.auth.api_key
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise errors.illegal("seed")
    state.reset(seed=seed, balance=_decimal(body, "balance", required=False))
    return {"reset": True, "seed": state.options.seed}


async def configure(request: web.Request, state: SimState) -> Any:
    body = await _body(request)
    config = state.engine.config
    for key, attr in (("taker_fee", "taker_fee"), ("maker_fee", "maker_fee")):
        value = _decimal(body, key, required=False)
        if value is not None:
            setattr(config, attr, value)
    slippage = _decimal(body, "slippage_bps", required=False)
    if slippage is not None:
        config.slippage_bps = slippage
    if "weight_limit" in body:
        limit = body["weight_limit"]
        if limit is not None and not isinstance(limit, int):
            raise errors.illegal("weight_limit")
        state.options.weight_limit = limit
    return _config(state)


def _config(state: SimState) -> dict[str, Any]:
    config = state.engine.config
    return {
        "taker_fee": fmt(config.taker_fee),
        "maker_fee": fmt(config.maker_fee),
        "slippage_bps": fmt(config.slippage_bps),
        "weight_limit": state.options.weight_limit,
        "tick_interval": state.options.tick_interval,
        "seed": state.options.seed,
    }


def _prices(state: SimState) -> dict[str, str]:
    return {s: fmt(p) for s, p in state.prices.prices.items()}


def _positions(state: SimState) -> list[dict[str, Any]]:
    engine = state.engine
    return [views.position_risk(engine, p, 2) for p in engine.positions.values() if p.amount]


async def get_state(request: web.Request, state: SimState) -> Any:
    engine = state.engine
    return {
        "wallet": fmt(engine.wallet),
        "available": fmt(engine.available()),
        "dual_side": engine.dual_side,
        "positions": _positions(state),
        "open_orders": [o.to_api() for o in engine.open_orders(None)],
        "open_algo_orders": [a.to_api() for a in engine.open_algo_orders(None)],
    }


async def snapshot(request: web.Request, state: SimState) -> Any:
    engine = state.engine
    base = await get_state(request, state)
    base.update(
        prices=_prices(state),
        ticks=state.prices.ticks,
        orders=[o.to_api() for o in engine.ledger.orders.values()],
        algo_orders=[a.to_api() for a in engine.ledger.algo_orders.values()],
        trades=[f.to_api() for f in engine.ledger.fills],
        faults=state.faults.describe(),
        config=_config(state),
    )
    return base


async def get_requests(request: web.Request, state: SimState) -> Any:
    raw = request.query.get("since", "0")
    if not raw.isdigit():
        raise errors.illegal("since")
    return state.log.since(int(raw))


async def clear_requests(request: web.Request, state: SimState) -> Any:
    state.log.clear()
    return state.log.since(0)


async def get_prices(request: web.Request, state: SimState) -> Any:
    return {"ticks": state.prices.ticks, "prices": _prices(state)}


async def ws_disconnect(request: web.Request, state: SimState) -> Any:
    """Drop every WebSocket connection (a stream outage for reconnect tests)."""
    hub = request.app[HUB_KEY]
    count = len(hub.connections)
    await hub.close_all()
    return {"closed": count}


async def ws_stats(request: web.Request, state: SimState) -> Any:
    hub = request.app[HUB_KEY]
    return {
        "connections": [
            {
                "streams": sorted(c.streams.values()),
                "user": c.listen_key is not None,
                "listen_key": c.listen_key,
                "sent": c.sent,
                "dropped": c.dropped,
                "queued": c.queue.qsize(),
            }
            for c in hub.connections
        ]
    }


ADMIN_ROUTES = (
    ("POST", "/_sim/price", set_price),
    ("POST", "/_sim/path", set_path),
    ("POST", "/_sim/volatility", set_volatility),
    ("POST", "/_sim/tick", tick),
    ("GET", "/_sim/clock", get_clock),
    ("POST", "/_sim/clock", set_clock),
    ("GET", "/_sim/prices", get_prices),
    ("POST", "/_sim/open_position", open_position),
    ("POST", "/_sim/close_position", close_position),
    ("POST", "/_sim/order", manual_order),
    ("POST", "/_sim/fault", add_fault),
    ("DELETE", "/_sim/fault", clear_faults),
    ("GET", "/_sim/fault", list_faults),
    ("POST", "/_sim/reset", reset),
    ("POST", "/_sim/config", configure),
    ("POST", "/_sim/keys", set_keys),
    ("GET", "/_sim/state", get_state),
    ("GET", "/_sim/snapshot", snapshot),
    ("GET", "/_sim/requests", get_requests),
    ("DELETE", "/_sim/requests", clear_requests),
    ("POST", "/_sim/ws/disconnect", ws_disconnect),
    ("GET", "/_sim/ws", ws_stats),
)


def register(app: web.Application) -> None:
    for method, path, handler in ADMIN_ROUTES:
        app.router.add_route(method, path, _wrap(handler))


def _wrap(handler: Any) -> Any:
    async def route(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        try:
            result = await handler(request, state)
        except SimError as exc:
            return web.json_response(exc.body(), status=400)
        return web.json_response(result, dumps=_dumps)

    route.__name__ = handler.__name__
    return route


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return fmt(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
