"""Which symbol's last lock holder died mid-run: a marker per run, kept beside the lock.

Why: the lock's key expires the same way whether its holder finished or was killed, so a
new holder cannot tell from the lock alone that someone left work half done (a stop sent
but never recorded). Each ``symbol_lock`` run therefore writes ``<lock>:run`` = its owner
when it starts and removes it when it ends normally. A run that starts and finds a marker
of another owner knows that owner never ended: it sets ``<lock>:dead`` (until a run that
can clean up, the price path's, resolves the dead run's intents and clears it).

``symbol_lock`` takes its lock and marks its run in one script (``take_and_start``), which
also answers whether a dead run is pending, and ends the run with the lock's release
(``end_and_release``): one round trip each instead of three and two.
"""

from __future__ import annotations

from typing import Any

from core.redis_scripts import run_script

# KEYS: run marker, dead flag. ARGV: owner, marker TTL (s). Returns the previous owner.
_START = """
local old = redis.call('get', KEYS[1])
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if old and old ~= ARGV[1] then redis.call('set', KEYS[2], old, 'EX', ARGV[2]) end
return old
"""
# KEYS: run marker. ARGV: owner. Removes the marker only if it is still this run's.
_END = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS: lock, run marker, dead flag. ARGV: owner, lock TTL (ms), marker TTL (s).
# The lock's SET NX PX and, only if it took the lock, START; then whether the dead flag is
# set (by this start or an earlier one not resolved yet): false (busy), 1 (no), 2 (set).
_TAKE_AND_START = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local old = redis.call('get', KEYS[2])
redis.call('set', KEYS[2], ARGV[1], 'EX', ARGV[3])
if old and old ~= ARGV[1] then redis.call('set', KEYS[3], old, 'EX', ARGV[3]) end
return 1 + redis.call('exists', KEYS[3])
"""
# KEYS: run marker, lock. ARGV: owner. END, then the lock's compare-and-delete (1: released).
END_AND_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
if redis.call('get', KEYS[2]) == ARGV[1] then return redis.call('del', KEYS[2]) end
return 0
"""
MARKER_TTL_S = 86_400  # a symbol untouched for a day has nothing left to clean up


def run_key(lock_key: str) -> str:
    return f"{lock_key}:run"


def dead_key(lock_key: str) -> str:
    return f"{lock_key}:dead"


def start_run(client: Any, lock_key: str, owner: str) -> bool:
    """Mark this run; True if the previous run on this lock never ended (it died)."""
    old = run_script(client, _START, 2, run_key(lock_key), dead_key(lock_key), owner, MARKER_TTL_S)
    return old is not None


def end_run(client: Any, lock_key: str, owner: str) -> None:
    run_script(client, _END, 1, run_key(lock_key), owner)


def take_and_start(client: Any, lock_key: str, owner: str, ttl_ms: int) -> bool | None:
    """Take the lock and mark the run in one round trip: None if the lock is busy, else
    whether a dead run is pending on it (what ``dead_run_pending`` would answer next)."""
    keys = (lock_key, run_key(lock_key), dead_key(lock_key))
    taken = run_script(client, _TAKE_AND_START, 3, *keys, owner, ttl_ms, MARKER_TTL_S)
    return None if not taken else int(taken) == 2


def end_and_release(client: Any, lock_key: str, owner: str) -> bool:
    """``end_run`` and the lock's release in one round trip; True if the lock was ours."""
    return bool(run_script(client, END_AND_RELEASE, 2, run_key(lock_key), lock_key, owner))


def dead_run_pending(client: Any, lock_key: str) -> bool:
    """A run on this lock died and its intents have not been resolved yet."""
    return bool(client.exists(dead_key(lock_key)))


def clear_dead_run(client: Any, lock_key: str) -> None:
    client.delete(dead_key(lock_key))
