"""One lock per (exchange, symbol), with a fencing token the database checks.

A Redis lock (SET NX PX, compare-and-delete) only keeps two workers from doing the same work at
once; it cannot make a paused worker harmless, because the pause can outlast the TTL and the
worker then writes after someone else took over. So every acquisition also draws a fencing
token from a PostgreSQL sequence (durable and monotonic even across a Redis restart), and every
position write carries it: ``UPDATE ... WHERE id = :id AND fence <= :token``. A write that
updates no row came from a holder that lost the lock; it is abandoned (``StaleFence``).

``symbol_lock`` holds the key for a short ``ttl`` (``VIGIL_LOCK_TTL``) renewed by a watchdog
thread in the holder (``core.lock_watchdog``): a killed holder frees its symbol within that
TTL, and a holder whose renewal failed stops before its next exchange mutation
(``ensure_locks_held``, raising ``LockLost``). The fencing rules are unchanged.

A release that meets a Redis outage is retried in the background (compare-and-delete, so
only the holder's own lock) until Redis answers or the key's TTL has run out: a task the
outage interrupted does not leave its symbol locked once Redis is back. A lock is never
broken by anyone but its holder or its TTL.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Position
from core.dead_runs import end_and_release, take_and_start
from core.lock_watchdog import COMPARE_AND_EXTEND, LeaseWatchdog, held_leases, holding
from core.metrics import observe_lock_wait
from core.redis_scripts import run_script

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_EXTEND = COMPARE_AND_EXTEND
# an extend within this long of the key's last confirmation does not ask Redis (``extend``)
RECENTLY_CONFIRMED_S = 0.25
T = TypeVar("T")


class LockNotAcquired(TimeoutError):
    """The lock stayed busy for the whole blocking timeout; the caller retries later."""


class LockLost(LockNotAcquired):
    """The lock expired, was taken by someone else, or could not be renewed while held.

    A kind of ``LockNotAcquired``: every caller that leaves a busy symbol to its next run
    leaves a lost one the same way, and writes nothing more."""


class StaleFence(RuntimeError):
    """A write carried an older fencing token than the row's: its writer lost the lock."""


def lock_key(exchange: str, symbol: str) -> str:
    return f"vigil:lock:{exchange}:{symbol}"


NEXT_FENCE_TOKEN = func.nextval("fencing_token_seq")


def next_fence_token(session: Session) -> int:
    """Draw the next token from the database sequence (durable across Redis restarts)."""
    return int(session.execute(select(NEXT_FENCE_TOKEN)).scalar_one())


@dataclass
class HeldLock:
    """A lock in hand: its key, owner secret, fencing token and TTL.

    The token is drawn when the lock is taken, or (``lazy_token``) on first use: by
    ``draw_token`` inside the holder's first transaction, which saves a transaction of its
    own, or by ``token`` itself. Either way it is drawn while the lock is held and checked
    against the watchdog right after, so tokens stay ordered as holders are.
    """

    client: redis.Redis
    key: str
    owner: str
    drawn_token: int | None
    ttl_ms: int
    acquired_at: float = field(default_factory=time.monotonic)
    waited_s: float = 0.0
    lease: LeaseWatchdog | None = None  # the renewing watchdog (``symbol_lock``)
    token_source: Callable[[], int] | None = None  # for a token not drawn yet
    # whether a run on this lock died and its intents are unresolved (``symbol_lock`` asks
    # when it takes the lock); None: not asked
    dead_run: bool | None = None
    handed_back: bool = False  # released by the holder's own script (``hand_back_with``)

    @property
    def token(self) -> int:
        """The fencing token (drawn now, in a transaction of its own, if not yet drawn)."""
        if self.drawn_token is None:
            assert self.token_source is not None, "a lazy token needs its source"
            self._drawn(self.token_source())
        assert self.drawn_token is not None
        return self.drawn_token

    def draw_token(self, session: Session, *also: Any) -> tuple[Any, ...]:
        """The token, drawn in ``session``'s transaction if not drawn yet (no extra one),
        in the same statement as the scalar expressions ``also`` (returned after it)."""
        if self.drawn_token is not None and not also:
            return (self.drawn_token,)
        row = session.execute(select(NEXT_FENCE_TOKEN, *also)).one()
        if self.drawn_token is None:
            self._drawn(int(row[0]))
        return (self.token, *row[1:])

    def accept_token(self, token: int) -> None:
        """A token the holder drew itself in a statement of its own making (the price run's
        first, with the position), while holding the lock; kept unless one is drawn already."""
        if self.drawn_token is None:
            self._drawn(token)

    def _drawn(self, token: int) -> None:
        self.check()  # a holder that lost the lock before drawing must not get a newer token
        self.drawn_token = token

    def extend(self, ttl_s: float | None = None) -> None:
        """Push the expiry out for a long operation; raise LockLost if no longer ours.

        Under a renewing watchdog, a key confirmed ours (taken, renewed or extended) less
        than ``RECENTLY_CONFIRMED_S`` ago is not asked again; only the progress (``touch``'s
        idle clock) is noted. Saves a round trip per stop move (the lock is taken
        milliseconds before it) while the check before an exchange order stays as fresh as
        an answer from Redis: a key lost meanwhile (a Redis restart that dropped the last
        writes) goes unnoticed for at most that long, as it would during the order's flight.
        """
        self.check()
        if (
            ttl_s is None
            and self.lease is not None
            and self.lease.confirmed_within(RECENTLY_CONFIRMED_S)
        ):
            self.lease.progressed()
            return
        ttl_ms = int((ttl_s * 1000) if ttl_s is not None else self.ttl_ms)
        sent = time.monotonic()
        if not run_script(self.client, _EXTEND, 1, self.key, self.owner, ttl_ms):
            if self.lease is not None:
                self.lease.mark_lost("extend found the key gone or taken")
            raise LockLost(self.key)
        if self.lease is not None:
            self.lease.touch(confirmed_at=sent)

    @property
    def lost(self) -> bool:
        """The watchdog could not renew (or has not for a whole TTL): stop, write nothing."""
        return self.lease is not None and self.lease.lost

    def check(self) -> None:
        """Raise LockLost if the watchdog lost the lock; call before any mutation."""
        if self.lost:
            raise LockLost(self.key)

    def still_held(self) -> bool:
        value: Any = self.client.get(self.key)
        if isinstance(value, bytes):
            value = value.decode()
        return bool(value == self.owner)

    def release(self) -> bool:
        return bool(run_script(self.client, _RELEASE, 1, self.key, self.owner))

    def hand_back_with(self, release: Callable[[str, str], T]) -> T:
        """End the run and release the lock in the caller's own round trip: ``release``
        (given the key and the owner) must do what ``end_and_release`` does, in a script
        that does more. Renewals stop first, as at the block's end; ``symbol_lock`` then
        releases nothing more (if ``release`` raises, it releases as usual)."""
        if self.lease is not None:
            self.lease.stop()
        found = release(self.key, self.owner)
        self.handed_back = True
        return found


@dataclass(frozen=True)
class FirstTry:
    """The lock's first take, already made by the caller in a script that did more in the
    same round trip (the price run's start, ``core.services.run_start``): the owner secret
    it used, what ``take_and_start`` answered (None: busy; else whether a dead run is
    pending) and when (monotonic, taken just before the script was sent)."""

    owner: str
    dead_run: bool | None
    at: float


def new_owner() -> str:
    """A lock holder's secret (compare-and-delete and renewals check it)."""
    return secrets.token_hex(16)


def engine_lock_ttl_ms(settings: Settings) -> int:
    """The TTL ``engine_lock`` takes its key with, for a ``FirstTry`` made elsewhere."""
    return int(min(settings.lock_ttl, settings.lock_timeout) * 1000)


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
    lazy_token: bool = False,
    mark_run: bool = False,
    first_try: FirstTry | None = None,
) -> HeldLock:
    """Take the lock, waiting up to ``blocking_timeout``; then draw a fencing token (with
    ``lazy_token``: when the holder first needs it, see ``HeldLock``).

    The token is drawn after the lock is held, so tokens are ordered as holders are.
    ``mark_run``: the run's marker is written in the same script that takes the lock
    (``core.dead_runs.take_and_start``); the holder then ends with ``finish``.
    ``first_try``: the caller made the first take (``FirstTry``); a busy lock is retried.
    """
    key = lock_key(exchange, symbol)
    owner = first_try.owner if first_try is not None else new_owner()
    ttl_ms = int(timeout * 1000)
    started = first_try.at if first_try is not None else time.monotonic()
    deadline = started + blocking_timeout
    delay = poll_interval
    tried = first_try
    take = functools.partial(_take, client, key, owner, ttl_ms, mark_run)
    while (dead_run := tried.dead_run if tried is not None else take()) is None:
        tried = None
        if time.monotonic() >= deadline:
            observe_lock_wait(time.monotonic() - started, acquired=False)
            raise LockNotAcquired(key)
        sleep(delay)
        delay = min(delay * 2, 0.2)
    # the TTL runs from here, not from the token's draw
    locked_at = tried.at if tried is not None else time.monotonic()
    token = None
    if not lazy_token:
        try:
            token = token_source()
        except BaseException:
            _give_back(client, key, owner, mark_run)
            raise
    waited = time.monotonic() - started
    observe_lock_wait(waited, acquired=True)  # vigil_lock_wait_seconds
    return HeldLock(
        client,
        key,
        owner,
        token,
        ttl_ms,
        acquired_at=locked_at,
        waited_s=waited,
        token_source=token_source,
        dead_run=dead_run if mark_run else None,
    )


def _take(client: redis.Redis, key: str, owner: str, ttl_ms: int, mark_run: bool) -> bool | None:
    """One try: None if the lock is busy; else whether a dead run is pending (False when
    not asked, without ``mark_run``)."""
    if mark_run:
        return take_and_start(client, key, owner, ttl_ms)
    return False if client.set(key, owner, nx=True, px=ttl_ms) else None


def _give_back(client: redis.Redis, key: str, owner: str, mark_run: bool) -> bool:
    """Release the lock (and end the run it marked); True if it was still ours."""
    if mark_run:
        return end_and_release(client, key, owner)
    return bool(run_script(client, _RELEASE, 1, key, owner))


@contextmanager
def symbol_lock(
    client: redis.Redis,
    exchange: str,
    symbol: str,
    *,
    token_source: Callable[[], int],
    timeout: float = 30.0,
    blocking_timeout: float = 10.0,
    ttl: float = 5.0,
    lazy_token: bool = False,
    first_try: FirstTry | None = None,
) -> Iterator[HeldLock]:
    """Hold the (exchange, symbol) lock for the block; release only if still ours.

    The key lives ``ttl`` seconds and is renewed at ``ttl / 3`` by a watchdog while the
    block runs; ``timeout`` (``VIGIL_LOCK_TIMEOUT``) is the longest the holder may go
    without progress (``extend``) before the renewals stop and the key expires.
    """
    held = acquire(
        client,
        exchange,
        symbol,
        token_source=token_source,
        timeout=min(ttl, timeout),
        blocking_timeout=blocking_timeout,
        lazy_token=lazy_token,
        mark_run=True,  # flags a predecessor that died mid-run
        first_try=first_try,
    )
    lease = LeaseWatchdog(
        lambda: bool(run_script(client, _EXTEND, 1, held.key, held.owner, held.ttl_ms)),
        held.ttl_ms / 1000,
        name=held.key,
        max_idle_s=timeout,
    )
    lease.renewed_at = lease.touched_at = held.acquired_at
    held.lease = lease
    lease.start()
    try:
        with holding(lease):
            yield held
    finally:
        lease.stop()
        try:  # a killed run never gets here: its marker stays, the next run flags it
            if not held.handed_back:
                _give_back(client, held.key, held.owner, mark_run=True)
        except redis.ConnectionError:
            release_later(held)


RELEASE_RETRY_SECONDS = 0.25


def release_later(held: HeldLock) -> threading.Thread:
    """Keep trying to release ``held`` until Redis answers or the key's TTL has run out."""

    def retry() -> None:
        deadline = time.monotonic() + held.ttl_ms / 1000
        while time.monotonic() < deadline:
            try:
                held.release()
                return
            except redis.ConnectionError:
                time.sleep(RELEASE_RETRY_SECONDS)

    thread = threading.Thread(target=retry, name=f"release-{held.key}", daemon=True)
    thread.start()
    return thread


def fence_token() -> int:
    """A fresh fencing token from PostgreSQL's sequence, in a transaction of its own."""
    from core.db.session import new_session  # the engine, built lazily: never at import

    with new_session() as session:
        token = next_fence_token(session)
        session.commit()
        return token


def engine_lock(
    client: redis.Redis,
    settings: Settings,
    exchange: str,
    symbol: str,
    *,
    lazy_token: bool = False,
    first_try: FirstTry | None = None,
) -> AbstractContextManager[HeldLock]:
    """The (exchange, symbol) lock with the settings' timeouts: what every path that acts on
    a symbol (opening, close, price reaction, aged, cleanup) holds while it acts."""
    return _settings_lock(
        client,
        settings,
        exchange,
        symbol,
        wait=settings.lock_blocking_timeout,
        lazy_token=lazy_token,
        first_try=first_try,
    )


def guardian_lock(
    client: redis.Redis, settings: Settings, exchange: str, symbol: str
) -> AbstractContextManager[HeldLock]:
    """The symbol's lock, waited for only briefly.

    A guardian (protection, zombies, reconciliation) that finds a symbol busy (an opening,
    a trailing move, a close) leaves it to its next cycle instead of queueing behind it: the
    holder is doing the work that matters for that symbol right now, and a long wait per
    symbol would stall the whole cycle.
    """
    return _settings_lock(
        client, settings, exchange, symbol, wait=settings.guardian_lock_wait_seconds
    )


def _settings_lock(
    client: redis.Redis,
    settings: Settings,
    exchange: str,
    symbol: str,
    *,
    wait: float,
    lazy_token: bool = False,
    first_try: FirstTry | None = None,
) -> AbstractContextManager[HeldLock]:
    """The symbol lock fenced by PostgreSQL's sequence, with the settings' idle timeout and
    TTL; the holders differ only in how long they wait for it (and when they draw a token,
    and whether they made the first take themselves)."""
    return symbol_lock(
        client,
        exchange,
        symbol,
        token_source=fence_token,
        timeout=settings.lock_timeout,
        ttl=settings.lock_ttl,
        blocking_timeout=wait,
        lazy_token=lazy_token,
        first_try=first_try,
    )


def ensure_locks_held() -> None:
    """Raise ``LockLost`` if a lock the current task holds was lost (renewal failed).

    Called by the exchange adapter before every mutation: a holder whose lock may be
    someone else's by now must not place or cancel anything.
    """
    for lease in held_leases():
        if lease.lost:
            raise LockLost(lease.name)


def fenced_update(session: Session, position_id: int, token: int, **values: Any) -> None:
    """Write position columns only if no newer lock holder has written the row.

    ``fence <= :token`` lets one holder write many times; a holder whose token is older than
    the row's is refused by the UPDATE itself, so the check and the write are one step.
    A holder whose lock watchdog already knows the lock is lost does not even try.
    """
    ensure_locks_held()
    params = {f"new_{name}": value for name, value in values.items()}
    stmt = _fenced_statement(tuple(values))
    result = session.execute(stmt, {"fenced_id": position_id, "token": token, **params})
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise StaleFence(f"position {position_id}: token {token} is older than the row's")


@functools.lru_cache(maxsize=64)
def _fenced_statement(columns: tuple[str, ...]) -> Any:
    """The fenced UPDATE of these columns on the table, built once per column set (values
    bound at execution; no ORM bookkeeping: the caller's loaded objects are not touched)."""
    table: Table = Position.__table__  # type: ignore[assignment]
    return (
        update(table)
        .where(table.c.id == bindparam("fenced_id"), table.c.fence <= bindparam("token"))
        .values(fence=bindparam("token"), **{c: bindparam(f"new_{c}") for c in columns})
    )
