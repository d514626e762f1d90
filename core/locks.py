"""One lock per (exchange, symbol), with a fencing token the database checks.

A Redis lock (SET NX PX, compare-and-delete) only keeps two workers from doing the same work at
once; it cannot make a paused worker harmless, because the pause can outlast the TTL and the
worker then writes after someone else took over. So every acquisition also draws a fencing
token from a PostgreSQL sequence (durable and monotonic even across a Redis restart), and every
position write carries it: ``UPDATE ... WHERE id = :id AND fence <= :token``. A write that
updates no row came from a holder that lost the lock; it is abandoned (``StaleFence``).

A release that meets a Redis outage is not given up: the holder keeps trying it in the
background (compare-and-delete, so only its own lock) until Redis answers or the TTL would
have freed the lock anyway. Without that, a task interrupted by the outage leaves its symbol
locked for the whole TTL after Redis is back (the lock survives in the append-only file).
A lock is never broken by anyone but its holder or its TTL.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from core.db.models import Position
from core.metrics import observe_lock_wait

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LockNotAcquired(TimeoutError):
    """The lock stayed busy for the whole blocking timeout; the caller retries later."""


class LockLost(RuntimeError):
    """The lock expired or was taken by someone else while held."""


class StaleFence(RuntimeError):
    """A write carried an older fencing token than the row's: its writer lost the lock."""


def lock_key(exchange: str, symbol: str) -> str:
    return f"vigil:lock:{exchange}:{symbol}"


def next_fence_token(session: Session) -> int:
    """Draw the next token from the database sequence (durable across Redis restarts)."""
    return int(session.execute(text("SELECT nextval('fencing_token_seq')")).scalar_one())


@dataclass
class HeldLock:
    """A lock in hand: its key, owner secret, fencing token and TTL."""

    client: redis.Redis
    key: str
    owner: str
    token: int
    ttl_ms: int
    acquired_at: float = field(default_factory=time.monotonic)
    waited_s: float = 0.0

    def extend(self, ttl_s: float | None = None) -> None:
        """Push the expiry out for a long operation; raise LockLost if no longer ours."""
        ttl_ms = int((ttl_s * 1000) if ttl_s is not None else self.ttl_ms)
        if not self.client.eval(_EXTEND, 1, self.key, self.owner, ttl_ms):
            raise LockLost(self.key)

    def still_held(self) -> bool:
        value: Any = self.client.get(self.key)
        if isinstance(value, bytes):
            value = value.decode()
        return bool(value == self.owner)

    def release(self) -> bool:
        return bool(self.client.eval(_RELEASE, 1, self.key, self.owner))


def acquire(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    *,
    token_source: Callable[[], int],
    timeout: float = 30.0,
    blocking_timeout: float = 10.0,
    poll_interval: float = 0.01,
    sleep: Callable[[float], None] = time.sleep,
) -> HeldLock:
    """Take the lock, waiting up to ``blocking_timeout``; then draw a fencing token.

    The token is drawn after the lock is held, so tokens are ordered as holders are.
    """
    key = lock_key(exchange, symbol)
    owner = secrets.token_hex(16)
    ttl_ms = int(timeout * 1000)
    started = time.monotonic()
    deadline = started + blocking_timeout
    delay = poll_interval
    while not client.set(key, owner, nx=True, px=ttl_ms):
        if time.monotonic() >= deadline:
            observe_lock_wait(time.monotonic() - started, acquired=False)
            raise LockNotAcquired(key)
        sleep(delay)
        delay = min(delay * 2, 0.2)
    try:
        token = token_source()
    except BaseException:
        client.eval(_RELEASE, 1, key, owner)
        raise
    waited = time.monotonic() - started
    observe_lock_wait(waited, acquired=True)  # vigil_lock_wait_seconds
    return HeldLock(client, key, owner, token, ttl_ms, waited_s=waited)


@contextmanager
def symbol_lock(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    *,
    token_source: Callable[[], int],
    timeout: float = 30.0,
    blocking_timeout: float = 10.0,
) -> Iterator[HeldLock]:
    """Hold the (exchange, symbol) lock for the block; release only if still ours."""
    held = acquire(
        client,
        exchange,
        symbol,
        token_source=token_source,
        timeout=timeout,
        blocking_timeout=blocking_timeout,
    )
    try:
        yield held
    finally:
        try:
            held.release()
        except redis.ConnectionError:
            release_later(held)


RELEASE_RETRY_SECONDS = 0.25


def release_later(held: HeldLock) -> threading.Thread:
    """Keep trying to release ``held`` until Redis answers or its TTL is past."""

    def retry() -> None:
        deadline = held.acquired_at + held.ttl_ms / 1000
        while time.monotonic() < deadline:
            try:
                held.release()
                return
            except redis.ConnectionError:
                time.sleep(RELEASE_RETRY_SECONDS)

    thread = threading.Thread(target=retry, name=f"release-{held.key}", daemon=True)
    thread.start()
    return thread


def fenced_update(session: Session, position_id: int, token: int, **values: Any) -> None:
    """Write position columns only if no newer lock holder has written the row.

    ``fence <= :token`` lets one holder write many times; a holder whose token is older than
    the row's is refused by the UPDATE itself, so the check and the write are one step.
    """
    stmt = (
        update(Position)
        .where(Position.id == position_id, Position.fence <= token)
        .values(fence=token, **values)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(stmt)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise StaleFence(f"position {position_id}: token {token} is older than the row's")
