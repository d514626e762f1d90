"""Where the price path's bands live: Redis, one hash per (exchange, symbol).

Each decision that watches a symbol's price (trailing, aged, ...) publishes its own band as
one field of the hash; the ingest reads the intersection and enqueues work only for ticks
outside it. Redis is the right home: bands are derived state, rebuilt by the next decision
after any loss, and the ingest on another machine must see them within milliseconds.
A symbol with no band fields is not tracked: its ticks enqueue nothing.

Layout: ``vigil:band:<exchange>:<symbol>`` hash, field = component, value = JSON
``{"low", "high", "valid_until"}`` (strings / ISO time / null); every change is announced on
the channel ``vigil:bands:<exchange>`` with the symbol as message, so an ingest can refresh
one symbol instead of polling all.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import redis

from core.domain.bands import PriceBand


def band_key(exchange: str, symbol: str) -> str:
    return f"vigil:band:{exchange}:{symbol}"


def channel(exchange: str) -> str:
    return f"vigil:bands:{exchange}"


def _encode(band: PriceBand) -> str:
    return json.dumps(
        {
            "low": None if band.low is None else str(band.low),
            "high": None if band.high is None else str(band.high),
            "valid_until": band.valid_until.isoformat() if band.valid_until else None,
        }
    )


def _decode(raw: bytes | str) -> PriceBand:
    data = json.loads(raw)
    until = data.get("valid_until")
    return PriceBand(
        None if data.get("low") is None else Decimal(data["low"]),
        None if data.get("high") is None else Decimal(data["high"]),
        datetime.fromisoformat(until) if until else None,
    )


def publish(
    client: redis.Redis, exchange: str, symbol: str, component: str, band: PriceBand | None
) -> None:
    """Set (or with ``None`` remove) one component's band for a symbol, and announce it."""
    key = band_key(exchange, symbol)
    pipe = client.pipeline()
    if band is None:
        pipe.hdel(key, component)
    else:
        pipe.hset(key, component, _encode(band))
    pipe.publish(channel(exchange), symbol)
    pipe.execute()


def component_of_each(
    client: redis.Redis, exchange: str, symbols: list[str], component: str
) -> dict[str, PriceBand | None]:
    """One component's published band for each of ``symbols`` (None: none), one round trip."""
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.hget(band_key(exchange, symbol), component)
    raws = pipe.execute() if symbols else []
    return {s: None if raw is None else _decode(raw) for s, raw in zip(symbols, raws, strict=True)}


def components(client: redis.Redis, exchange: str, symbol: str) -> dict[str, PriceBand]:
    raw: dict[bytes, bytes] = client.hgetall(band_key(exchange, symbol))  # type: ignore[assignment]
    return {k.decode() if isinstance(k, bytes) else str(k): _decode(v) for k, v in raw.items()}


def combined(client: redis.Redis, exchange: str, symbol: str) -> PriceBand | None:
    """The band in which no component's decision can change; None if nothing watches."""
    parts = list(components(client, exchange, symbol).values())
    if not parts:
        return None
    band = parts[0]
    for part in parts[1:]:
        band = band.intersect(part)
    return band


def tracked_symbols(client: redis.Redis, exchange: str) -> list[str]:
    prefix = band_key(exchange, "")
    return sorted(
        (k.decode() if isinstance(k, bytes) else str(k))[len(prefix) :]
        for k in client.scan_iter(match=prefix + "*", count=500)
    )
