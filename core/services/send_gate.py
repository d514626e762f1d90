"""A price batch's runs send their new stops before any of them goes on: the burst's gate.

Why: a batch's runs (``core.services.price_batch``) share one process, so under the GIL and
on a machine of few cores a run's follow-up work after its POST (the old stop's DELETE, the
accepted state's transaction, the band's publish, the lock's release) competes with the
other runs that have not sent yet, and the burst's last POST, which is what tick -> order
measures, waits behind the others' follow-ups. Held at this gate, each run goes on only
once every run of its batch has sent (or will send nothing: it failed, moved nothing, or
ended), so the POSTs go first and the follow-ups after.

Nothing here weakens a move: the intent is committed before the POST as before, and make
before break stays (the old stop is simply cancelled a little later; both stops are the
engine's, reduce-only, the old one further from the mark). The wait is bounded: a run that
is stuck (a slow exchange, a run not started yet) holds the others at most ``bound_s``,
after which the gate stays open for the batch. The symbol lock's lease keeps being renewed
meanwhile by its watchdog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SendGate:
    """One batch's gate: ``runs`` seats; opens when every seat has passed or left."""

    def __init__(
        self, runs: int, bound_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cond = threading.Condition()
        self._remaining = runs
        self._bound_s = bound_s
        self._clock = clock
        self._open = runs <= 1

    def seat(self) -> Seat:
        """One run's place at the gate (one per run of the batch)."""
        return Seat(self)

    @property
    def is_open(self) -> bool:
        with self._cond:
            return self._open

    def _arrive(self) -> None:
        with self._cond:
            self._remaining -= 1
            if self._remaining <= 0:
                self._open = True
                self._cond.notify_all()

    def _wait(self) -> bool:
        """Wait until the gate opens, at most ``bound_s``; True when it opened in time.
        A run that gives up opens the gate for the batch: one stuck run costs the others
        one bound, not one each."""
        deadline = self._clock() + self._bound_s
        with self._cond:
            while not self._open:
                left = deadline - self._clock()
                if left <= 0:
                    self._open = True
                    self._cond.notify_all()
                    return False
                self._cond.wait(left)
            return True


class Seat:
    """A run's seat: ``sent`` (its order is out: wait for the others), ``skipped`` (nothing
    to send now: do not hold them), ``leave`` (the run ended). Only the first call counts."""

    def __init__(self, gate: SendGate) -> None:
        self._gate = gate
        self._done = False
        self._guard = threading.Lock()

    def _arrive_once(self) -> bool:
        with self._guard:
            if self._done:
                return False
            self._done = True
        self._gate._arrive()
        return True

    def sent(self) -> None:
        if self._arrive_once():
            self._gate._wait()

    def skipped(self) -> None:
        self._arrive_once()

    def leave(self) -> None:
        self._arrive_once()


__all__ = ["Seat", "SendGate"]
