"""A price run's start in one Redis round trip: take the tick window, take the symbol's lock
(with the run marker), read the symbol settings' version; and its end in one: the window's
finish (the pending flag released or kept) with the lock's release (and the run marker's end).

Why one script: the three were a round trip each at the start of every run (the window's
``TAKE_SCRIPT``, the lock's ``take_and_start``, the settings cache's version check), in that
order and with nothing between them but the client's own work. The script does exactly what
the three did, in the same order, atomically: the window is taken first (so the pending
flag is ``running`` before anything else), then one try of the lock; a busy lock is waited
for as before (``core.locks.acquire`` with the ``FirstTry``), the window already taken, as
before. The settings version read here is the one the run's decision checks its cached
settings against (``symbol_settings.version_known``), a few milliseconds earlier than it
would have read it itself.

The end: ``FINISH_SCRIPT`` then ``END_AND_RELEASE``, where the run did them one after the
other (the lock released, then the flag); atomic now, both leases stopped first as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from core.config import Settings
from core.dead_runs import MARKER_TTL_S, dead_key, run_key
from core.domain.bands import PriceBand
from core.locks import FirstTry, engine_lock_ttl_ms, lock_key, new_owner
from core.redis_scripts import run_script
from core.services.symbol_settings import VERSION_KEY
from core.services.tick_window import (
    FINISH_SCRIPT,
    RunEnd,
    TickWindow,
    finish_args,
    pending_key,
    window_from_reply,
    window_key,
)

# KEYS: window, pending flag, lock, run marker, dead flag, settings version.
# ARGV: flag TTL (ms), owner, lock TTL (ms), marker TTL (s).
# TAKE_SCRIPT (core.services.tick_window), then _TAKE_AND_START (core.dead_runs), then GET.
# Returns {window or {}, 0 (lock busy) / 1 (taken) / 2 (taken, a dead run pending), version}.
_START = """
local w = redis.call('HMGET', KEYS[1], 'last', 'high', 'low', 'first_ts', 'ts', 'n')
redis.call('SET', KEYS[2], 'running', 'PX', ARGV[1])
if w[1] then
  redis.call('HSET', KEYS[1], 'high', w[1], 'low', w[1], 'n', 0)
  redis.call('HDEL', KEYS[1], 'first_ts')
else
  w = {}
end
local lock = 0
if redis.call('set', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then
  local old = redis.call('get', KEYS[4])
  redis.call('set', KEYS[4], ARGV[2], 'EX', ARGV[4])
  if old and old ~= ARGV[2] then redis.call('set', KEYS[5], old, 'EX', ARGV[4]) end
  lock = 1 + redis.call('exists', KEYS[5])
end
return {w, lock, redis.call('get', KEYS[6])}
"""


@dataclass(frozen=True)
class RunStart:
    """What the run's first round trip found: the window taken (None: no price recorded),
    the lock's first try, the settings version (None: not announced yet)."""

    window: TickWindow | None
    lock: FirstTry
    settings_version: bytes | None


def start_run(
    client: redis.Redis, settings: Settings, exchange: str, symbol: str, run_ttl_s: float
) -> RunStart:
    """Take the window (flag held ``run_ttl_s``), try the lock once, read the version."""
    key = lock_key(exchange, symbol)
    keys = (
        window_key(exchange, symbol),
        pending_key(exchange, symbol),
        key,
        run_key(key),
        dead_key(key),
        VERSION_KEY,
    )
    owner = new_owner()
    at = time.monotonic()  # before the send: the lock's TTL runs from no earlier than this
    args = (int(run_ttl_s * 1000), owner, engine_lock_ttl_ms(settings), MARKER_TTL_S)
    reply: Any = run_script(client, _START, len(keys), *keys, *args)
    raw_window, lock, version = (list(reply) + [None])[:3]
    taken = int(lock)
    return RunStart(
        window_from_reply(raw_window) if raw_window else None,
        FirstTry(owner, None if taken == 0 else taken == 2, at),
        version if isinstance(version, bytes) or version is None else str(version).encode(),
    )


# KEYS: window, pending flag, run marker, lock. ARGV: FINISH_SCRIPT's five, owner, drop ('1':
# no band and nothing scheduled: the flag is simply released). FINISH_SCRIPT (or the drop),
# then END_AND_RELEASE (core.dead_runs) on KEYS[3], KEYS[4]; returns FINISH_SCRIPT's answer.
_FINISH_AND_RELEASE = (
    "local function finish()\n"
    + FINISH_SCRIPT
    + """end
local code = 0
if ARGV[7] == '1' then redis.call('DEL', KEYS[2]) else code = finish() end
if redis.call('get', KEYS[3]) == ARGV[6] then redis.call('del', KEYS[3]) end
if redis.call('get', KEYS[4]) == ARGV[6] then redis.call('del', KEYS[4]) end
return code
"""
)


def finish_and_release(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    band: PriceBand | None,
    now: datetime,
    *,
    ttl_s: float,
    keep: bool,
    lock: str,
    owner: str,
) -> RunEnd:
    """``finish_window`` and the lock's ``end_and_release`` (``lock`` held by ``owner``)."""
    args = finish_args(band, now, ttl_s=ttl_s, keep=keep)
    drop = args is None
    keys = (window_key(exchange, symbol), pending_key(exchange, symbol), run_key(lock), lock)
    argv = [*(args or ["", "", "0", 0, "0"]), owner, "1" if drop else "0"]
    return RunEnd(int(run_script(client, _FINISH_AND_RELEASE, len(keys), *keys, *argv)))
