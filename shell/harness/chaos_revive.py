"""Processes that exit on their own are started again during a chaos run, as `vigil up` does.

Why: the harness drives the stack without `vigil up`'s watch loop (``shell/runtime/watch.py``),
so a child that exited by itself stayed dead for the rest of the run, and everything it
should have done counted against the engine. Seen on Bybit: after a Redis kill both Celery
workers stopped with kombu's ``Unrecoverable error`` and nothing took a task for minutes.
The embedded servers are left alone (the outages kill them on purpose and the faults start
them again), and so is a child the harness itself is killing (``process_lock``).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from shell.runtime.background import BackgroundThread


class Chaos(Protocol):
    """What the reviver needs of the chaos run (``shell.harness.chaos_faults.Chaos`` is one)."""

    process_lock: threading.Lock
    stack: Any

    def say(self, line: str) -> None: ...


class Reviver(BackgroundThread):
    """A thread that starts every exited child of the chaos stack again, once a second."""

    def __init__(self, chaos: Chaos, interval: float = 1.0) -> None:
        super().__init__("chaos-reviver")
        self.chaos = chaos
        self.interval = interval
        self.revived: list[str] = []

    def stop(self) -> None:
        self._signal_stop(join_timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self.chaos.process_lock:
                if not self._stop.is_set():
                    self.revive_once()

    def revive_once(self) -> list[str]:
        """Start each exited child again; the names started. The caller holds the lock."""
        sup = self.chaos.stack.supervisor
        if sup is None:
            return []
        started = []
        for child in list(sup.children):
            if child.running:
                continue
            code = child.proc.returncode if child.proc is not None else None
            try:
                sup.kill_and_restart(child.name)
            except Exception as exc:  # noqa: BLE001 - reported; the next pass tries again
                self.chaos.say(f"{child.name} exited (code {code}) and did not start: {exc}")
                continue
            started.append(child.name)
            self.chaos.say(f"{child.name} exited on its own (code {code}); started again")
        self.revived += started
        return started
