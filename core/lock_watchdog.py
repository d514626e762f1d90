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

Each lease still renews on a thread of its own (a renewal stuck on a dead connection holds up
only its lease), but the threads are kept between leases (``_Runners``): a price run holds two
leases, and starting and joining a thread for each cost a tenth of a millisecond of CPU twice
per run. ``stop`` does not wait for the thread to notice: it waits only for a renewal under way
(as the join did, at most a second), so none lands after it returns unless one takes longer
than that, as before.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
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
        self._renewing = threading.Lock()  # held for a renewal; ``stop`` waits for it
        self._runner: threading.Thread | None = None
        self.renewed_at = time.monotonic()  # the key was just set (or renewed) by the holder
        self.touched_at = self.renewed_at
        self.renewals = 0

    # --- the holder's side -------------------------------------------------------------

    def start(self) -> LeaseWatchdog:
        _runners().run(self)
        return self

    def stop(self) -> None:
        """The work ended: no more renewals (the caller releases or hands on the key). A
        renewal under way is waited for, at most a second (as a join did): none lands after
        this returns unless it takes longer than that."""
        if self._runner is threading.current_thread():
            self._stop.set()  # from a renewal itself: it is not under way any more after it
            return
        waited = self._renewing.acquire(timeout=1.0)
        self._stop.set()
        if waited:
            self._renewing.release()

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
        """Renew every ``ttl / 3`` until stopped (on a runner thread, ``_Runners``)."""
        self._runner = threading.current_thread()
        interval = self.ttl_s / 3
        while not self._stop.wait(interval):
            with self._renewing:
                if self._stop.is_set() or not self._renew_once():
                    return

    def _renew_once(self) -> bool:
        """One renewal; False when renewing ends (an idle holder, a failure)."""
        idle = time.monotonic() - self.touched_at
        if self.max_idle_s is not None and idle >= self.max_idle_s:
            return False  # a wedged holder: let the key expire
        sent = time.monotonic()  # the TTL runs from the renewal's send, not its answer
        try:
            ok = self._renew()
        except RedisError as exc:
            self.mark_lost(f"renewal failed: {exc}")
            return False
        if not ok:
            self.mark_lost("the key expired or was taken")
            return False
        self.renewed_at = sent
        self.renewals += 1
        return True


class _Runners:
    """Daemon threads that run leases' renewal loops, one lease at a time each, kept for the
    next lease once theirs stops; a thread idle for ``IDLE_S`` ends. The queue is written and
    an idle thread reserved under one lock, so a thread that times out never leaves a lease
    queued with nobody to run it."""

    IDLE_S = 60.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[LeaseWatchdog] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting on the queue and not reserved by a queued lease
        self.threads = 0  # threads alive (busy or idle)

    def run(self, lease: LeaseWatchdog) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._queue.put(lease)
                return
            self.threads += 1
        threading.Thread(
            target=self._serve, args=(lease,), name="lease-runner", daemon=True
        ).start()

    def _serve(self, lease: LeaseWatchdog) -> None:
        while True:
            try:
                lease._run()
            except BaseException:  # a renewal loop's bug must not take the runner with it
                log.exception("lease %s: renewal loop failed", lease.name)
                lease.mark_lost("its renewal loop failed")
            with self._lock:
                self._idle += 1
            try:
                lease = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    try:  # reserved while the wait timed out: run it
                        lease = self._queue.get_nowait()
                    except queue.Empty:  # (or another idle thread took it)
                        self._idle -= 1
                        self.threads -= 1
                        return


_RUNNERS: _Runners | None = None
_RUNNERS_GUARD = threading.Lock()


def _runners() -> _Runners:
    global _RUNNERS
    if _RUNNERS is None:
        with _RUNNERS_GUARD:
            if _RUNNERS is None:
                _RUNNERS = _Runners()
    return _RUNNERS


def _forget_runners() -> None:
    """After a fork: the parent's threads are not in the child, so neither are its runners."""
    global _RUNNERS, _RUNNERS_GUARD
    _RUNNERS, _RUNNERS_GUARD = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_runners)


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
