"""Leases that die with their holder: a short TTL kept alive by a renewing thread.

Why: a lock (or the price path's pending flag) with a long TTL outlives a killed holder by
that whole TTL, freezing its symbol; a short TTL alone would expire under a slow exchange
call. So the key lives ``ttl`` seconds and a daemon thread in the holder renews it every
``ttl / 3`` with a compare-and-extend script (only while the key still holds the holder's
value). When the process dies, so does the thread, and the key expires within ``ttl``.

A renewal that fails (Redis unreachable, key gone or taken) marks the lease ``lost``; the
holder checks that flag before every exchange mutation (``core.locks.ensure_locks_held``, called
by the exchange adapter) and stops with ``LockLost``, leaving the work to the next run. Time is
measured only with ``time.monotonic`` (a wall-clock jump cannot extend a lease): a lease
whose last successful renewal is ``ttl`` or more ago counts as lost even if no renewal has
failed yet (the holder may have been paused past its TTL).

``max_idle`` keeps the meaning ``VIGIL_LOCK_TIMEOUT`` always had: a holder that shows no
progress (``touch``, called by ``HeldLock.extend`` at each step) for that long stops being
renewed, so a live but wedged holder cannot keep a symbol forever.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from core.redis_scripts import run_script

log = logging.getLogger(__name__)

# KEYS: the key. ARGV: the holder's value, TTL (ms). 1 if extended, 0 if not ours any more.
COMPARE_AND_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LeaseWatchdog:
    """Renews one key at ``ttl / 3`` until stopped, the holder goes idle, or a renewal fails."""

    def __init__(
        self,
        renew: Callable[[], bool],
        ttl_s: float,
        *,
        name: str,
        max_idle_s: float | None = None,
    ) -> None:
        self._renew = renew
        self.ttl_s = ttl_s
        self.name = name
        self.max_idle_s = max_idle_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self.renewed_at = time.monotonic()  # the key was just set (or renewed) by the holder
        self.touched_at = self.renewed_at
        self.renewals = 0
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    # --- the holder's side -------------------------------------------------------------

    def start(self) -> LeaseWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """The work ended: no more renewals (the caller releases or hands on the key)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def touch(self, confirmed_at: float | None = None) -> None:
        """The holder made progress (and, having just renewed, holds a full TTL from
        ``confirmed_at``: the monotonic time its renewal was sent, not answered)."""
        self.touched_at = time.monotonic()
        self.renewed_at = self.touched_at if confirmed_at is None else confirmed_at

    def progressed(self) -> None:
        """The holder made progress without renewing (the key was confirmed just before)."""
        self.touched_at = time.monotonic()

    def confirmed_within(self, seconds: float) -> bool:
        """The key was confirmed ours (set or renewed) less than ``seconds`` ago (and less
        than a renewal interval)."""
        age = time.monotonic() - self.renewed_at
        return not self._lost.is_set() and age < min(seconds, self.ttl_s / 3)

    @property
    def lost(self) -> bool:
        """Lost for sure (a renewal failed) or possibly (no renewal for a whole TTL)."""
        if self._lost.is_set():
            return True
        return time.monotonic() - self.renewed_at >= self.ttl_s

    def mark_lost(self, why: str) -> None:
        if not self._lost.is_set():
            log.warning("lease %s lost: %s", self.name, why)
        self._lost.set()

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.ttl_s / 3
        while not self._stop.wait(interval):
            idle = time.monotonic() - self.touched_at
            if self.max_idle_s is not None and idle >= self.max_idle_s:
                return  # a wedged holder: let the key expire
            sent = time.monotonic()  # the TTL runs from the renewal's send, not its answer
            try:
                ok = self._renew()
            except RedisError as exc:
                self.mark_lost(f"renewal failed: {exc}")
                return
            if not ok:
                self.mark_lost("the key expired or was taken")
                return
            self.renewed_at = sent
            self.renewals += 1


# --- the leases the current task holds -------------------------------------------------------

_HELD: contextvars.ContextVar[tuple[LeaseWatchdog, ...]] = contextvars.ContextVar(
    "vigil_held_leases", default=()
)


@contextmanager
def holding(lease: LeaseWatchdog) -> Iterator[LeaseWatchdog]:
    """Register ``lease`` as held by the current context (see ``held_leases``)."""
    reset = _HELD.set((*_HELD.get(), lease))
    try:
        yield lease
    finally:
        _HELD.reset(reset)


def held_leases() -> tuple[LeaseWatchdog, ...]:
    """The leases the current context holds (innermost last)."""
    return _HELD.get()


@contextmanager
def renewing(client: Any, key: str, value: str, ttl_s: float) -> Iterator[LeaseWatchdog]:
    """Keep ``key`` alive (while it holds ``value``) for the block, and no longer.

    For keys whose holder is a running task rather than a lock (the price path's pending
    flag): a killed task's key expires within ``ttl_s``. The caller sets the key itself
    (with ``ttl_s``); once its value changes, renewals stop.
    """
    lease = LeaseWatchdog(
        lambda: bool(run_script(client, COMPARE_AND_EXTEND, 1, key, value, int(ttl_s * 1000))),
        ttl_s,
        name=key,
    )
    lease.start()
    try:
        yield lease
    finally:
        lease.stop()
