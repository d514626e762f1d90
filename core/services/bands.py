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
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

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
    """Set (or with ``None`` remove) one component's band for a symbol, and announce it.

    Inside ``remembering`` for this symbol, the symbol's whole band is read in the same
    round trip (and transaction) and kept for the run's end (``Remembered``)."""
    key = band_key(exchange, symbol)
    pipe = client.pipeline()
    if band is None:
        pipe.hdel(key, component)
    else:
        pipe.hset(key, component, _encode(band))
    pipe.publish(channel(exchange), symbol)
    remembered: Remembered | None = getattr(_runs, "current", None)
    if remembered is None or (remembered.exchange, remembered.symbol) != (exchange, symbol):
        pipe.execute()
        return
    pipe.hgetall(key)
    remembered.band = _combine(_decoded(pipe.execute()[-1]).values())
    remembered.known = True


@dataclass
class Remembered:
    """The symbol's band as the run's last ``publish`` left it (``known``: one was made)."""

    exchange: str
    symbol: str
    known: bool = False
    band: PriceBand | None = None


_runs = threading.local()


@contextmanager
def remembering(exchange: str, symbol: str) -> Iterator[Remembered]:
    """Keep the band this thread's publishes for ``symbol`` leave, read with them.

    Why: the price run publishes its band under the symbol's lock and, after releasing it,
    needs the symbol's whole band to end its window; every writer of a band holds that lock,
    so the band read with the run's last publish is the band the run ends with, and a read
    of its own (a round trip per run) is saved."""
    remembered = Remembered(exchange, symbol)
    outer = getattr(_runs, "current", None)
    _runs.current = remembered
    try:
        yield remembered
    finally:
        _runs.current = outer


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
    return _decoded(raw)


def _decoded(raw: dict[Any, Any]) -> dict[str, PriceBand]:
    return {k.decode() if isinstance(k, bytes) else str(k): _decode(v) for k, v in raw.items()}


def combined(client: redis.Redis, exchange: str, symbol: str) -> PriceBand | None:
    """The band in which no component's decision can change; None if nothing watches."""
    return _combine(components(client, exchange, symbol).values())


def _combine(parts: Iterable[PriceBand]) -> PriceBand | None:
    band: PriceBand | None = None
    for part in parts:
        band = part if band is None else band.intersect(part)
    return band


def tracked_symbols(client: redis.Redis, exchange: str) -> list[str]:
    prefix = band_key(exchange, "")
    return sorted(
        (k.decode() if isinstance(k, bytes) else str(k))[len(prefix) :]
        for k in client.scan_iter(match=prefix + "*", count=500)
    )
