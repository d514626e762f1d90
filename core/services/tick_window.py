"""The tick window in Redis: the ingest's writer script and the price task's take, finish
and restore scripts, beside the bands (``core/services/bands.py``) they are checked against.

Why a module of its own: the ingest (``core.ingest.prices``) writes the window and the price
task (``core.services.price_path``) reads it; both speak the same keys and Lua scripts, and
neither should own what the other needs. Each script is atomic, so no tick falls between a
check and a change of the pending flag.

Layout: ``vigil:px:<exchange>:<symbol>`` hash ``last high low first_ts ts n`` (prices as the
exchange's strings, times in ms since the epoch), ``vigil:px:pending:<exchange>:<symbol>``
the pending-or-running flag (expires after ``price_pending_ttl``, so a lost task cannot
silence a symbol for ever).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any

import redis

from core.domain.bands import PriceBand
from core.domain.trailing import PriceWindow
from core.redis_scripts import run_script


def window_key(exchange: str, symbol: str) -> str:
    return f"vigil:px:{exchange}:{symbol}"


def pending_key(exchange: str, symbol: str) -> str:
    return f"vigil:px:pending:{exchange}:{symbol}"


# KEYS: window, pending flag. ARGV: price, tick time (ms), flag TTL (ms).
# Extends the window with one tick; returns 1 when this tick must queue the price task.
TICK_SCRIPT = """
local w = redis.call('HMGET', KEYS[1], 'high', 'low', 'n')
local p = tonumber(ARGV[1])
local high, low = ARGV[1], ARGV[1]
if w[1] and tonumber(w[1]) >= p then high = w[1] end
if w[2] and tonumber(w[2]) <= p then low = w[2] end
local n = tonumber(w[3] or '0')
if n == 0 then redis.call('HSET', KEYS[1], 'first_ts', ARGV[2]) end
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'high', high, 'low', low, 'ts', ARGV[2], 'n', n + 1)
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

# KEYS: window, pending flag. ARGV: flag TTL (ms). Returns {last, high, low, first_ts, ts, n}
# and restarts the window at the last price. The flag stays held (now: running) until
# FINISH, so ticks during the run extend the window instead of queueing a second task.
TAKE_SCRIPT = """
local w = redis.call('HMGET', KEYS[1], 'last', 'high', 'low', 'first_ts', 'ts', 'n')
redis.call('SET', KEYS[2], 'running', 'PX', ARGV[1])
if not w[1] then return false end
redis.call('HSET', KEYS[1], 'high', w[1], 'low', w[1], 'n', 0)
redis.call('HDEL', KEYS[1], 'first_ts')
return w
"""

# KEYS: window, pending flag. ARGV: band low, band high ('' = unbounded), band expired
# ('1'/'0'), flag TTL (ms), keep ('1': the caller schedules a re-run).
# Ends a run: returns 2 (flag kept for the scheduled re-run), 1 (ticks that arrived during
# the run lie outside the new band: flag kept, the caller queues the successor) or 0 (flag
# released, and the window restarted at the last price: ticks inside the new band change
# nothing; the ingest queues the next task). Atomic: no tick falls between check and release.
FINISH_SCRIPT = """
if ARGV[5] == '1' then redis.call('PEXPIRE', KEYS[2], ARGV[4]) return 2 end
local w = redis.call('HMGET', KEYS[1], 'n', 'high', 'low', 'last')
if tonumber(w[1] or '0') > 0 then
  local outside = ARGV[3] == '1'
  if not outside and ARGV[1] ~= '' and tonumber(w[3]) <= tonumber(ARGV[1]) then outside = true end
  if not outside and ARGV[2] ~= '' and tonumber(w[2]) >= tonumber(ARGV[2]) then outside = true end
  if outside then redis.call('PEXPIRE', KEYS[2], ARGV[4]) return 1 end
  -- inside the new band they change nothing: the next window starts at the last price
  redis.call('HSET', KEYS[1], 'high', w[4], 'low', w[4], 'n', 0)
  redis.call('HDEL', KEYS[1], 'first_ts')
end
redis.call('DEL', KEYS[2])
return 0
"""

# KEYS: window, pending flag. ARGV: high, low, first_ts, n, flag TTL (ms).
# Puts a taken window back (merged with ticks since) and keeps the flag for the retry.
RESTORE_SCRIPT = """
local w = redis.call('HMGET', KEYS[1], 'last', 'high', 'low', 'first_ts', 'n')
local high, low = ARGV[1], ARGV[2]
if w[2] and tonumber(w[2]) > tonumber(high) then high = w[2] end
if w[3] and tonumber(w[3]) < tonumber(low) then low = w[3] end
local first = ARGV[3]
if w[4] and (first == '' or tonumber(w[4]) < tonumber(first)) then first = w[4] end
local n = tonumber(w[5] or '0') + tonumber(ARGV[4])
if not w[1] then redis.call('HSET', KEYS[1], 'last', ARGV[1]) end
redis.call('HSET', KEYS[1], 'high', high, 'low', low, 'n', n)
if first ~= '' then redis.call('HSET', KEYS[1], 'first_ts', first) end
redis.call('SET', KEYS[2], 'retrying', 'PX', ARGV[5])
return 1
"""


@dataclass(frozen=True, slots=True)
class TickWindow(PriceWindow):
    """A ``PriceWindow`` that also knows when its first tick arrived and how many it holds.

    ``first_tick_at`` is the exchange's time of the tick that left the band and queued the
    task: the start of the tick-to-order latency. ``ticks == 0`` means no tick came since
    the last take (a scheduled re-run, the sweep): its prices may be stale.
    """

    first_tick_at: datetime | None = None
    ticks: int = 0


def _ms(value: bytes | str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def take_window(
    client: redis.Redis, exchange: str, symbol: str, ttl_s: float = 30.0
) -> TickWindow | None:
    """Take the symbol's window (None if the ingest never recorded a price for it).

    The pending flag is held for ``ttl_s`` (the run's own), until ``finish_window``.
    """
    keys = [window_key(exchange, symbol), pending_key(exchange, symbol)]
    raw: Any = run_script(client, TAKE_SCRIPT, 2, *keys, int(ttl_s * 1000))
    return window_from_reply(raw) if raw else None


def window_from_reply(raw: Any) -> TickWindow:
    """The window in ``TAKE_SCRIPT``'s reply (``HMGET last high low first_ts ts n``)."""
    last, high, low, first_ts, _ts, n = raw
    return TickWindow(
        high=Decimal(_text(high)),
        low=Decimal(_text(low)),
        last=Decimal(_text(last)),
        first_tick_at=_ms(first_ts),
        ticks=int(n or 0),
    )


def restore_window(
    client: redis.Redis, exchange: str, symbol: str, window: TickWindow, ttl_s: float
) -> None:
    """Put a taken window back for the run's retry (the flag stays held meanwhile)."""
    first = (
        "" if window.first_tick_at is None else str(int(window.first_tick_at.timestamp() * 1000))
    )
    keys = [window_key(exchange, symbol), pending_key(exchange, symbol)]
    args: list[str | int] = [
        str(window.high),
        str(window.low),
        first,
        window.ticks,
        int(ttl_s * 1000),
    ]
    run_script(client, RESTORE_SCRIPT, 2, *keys, *args)


class RunEnd(IntEnum):
    """How a run left the pending flag (``FINISH_SCRIPT``)."""

    RELEASED = 0
    SUCCESSOR = 1  # ticks during the run lie outside the new band: queue the next run now
    RERUN = 2  # kept for a re-run scheduled by the caller


def finish_window(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    band: PriceBand | None,
    now: datetime,
    *,
    ttl_s: float,
    keep: bool = False,
) -> RunEnd:
    """End a run: release the flag, unless ticks that came meanwhile matter (or ``keep``)."""
    args = finish_args(band, now, ttl_s=ttl_s, keep=keep)
    if args is None:  # nothing watches the symbol any more: its ticks matter to no one
        client.delete(pending_key(exchange, symbol))
        return RunEnd.RELEASED
    keys = [window_key(exchange, symbol), pending_key(exchange, symbol)]
    return RunEnd(int(run_script(client, FINISH_SCRIPT, 2, *keys, *args)))


def finish_args(
    band: PriceBand | None, now: datetime, *, ttl_s: float, keep: bool
) -> list[Any] | None:
    """``FINISH_SCRIPT``'s ARGV for a run ending against ``band``; None: no script, the flag
    is simply released (no band and nothing scheduled)."""
    if band is None:
        if not keep:
            return None
        low, high, expired = "", "", False
    else:
        low = "" if band.low is None else str(band.low)
        high = "" if band.high is None else str(band.high)
        expired = band.valid_until is not None and now >= band.valid_until
    return [low, high, "1" if expired else "0", int(ttl_s * 1000), "1" if keep else "0"]


def claim_pending(client: redis.Redis, exchange: str, symbol: str, ttl_s: float) -> bool:
    """Set the pending flag unless a run is pending or running; True: the caller queues one."""
    return bool(client.set(pending_key(exchange, symbol), "claimed", nx=True, px=int(ttl_s * 1000)))


def release_pending(client: redis.Redis, exchange: str, symbol: str) -> None:
    """Undo a claim whose task could not be queued, so the next tick tries again."""
    client.delete(pending_key(exchange, symbol))
