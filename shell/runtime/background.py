"""A daemon thread a live view or a harness runs beside its main work, stopped by an event.

Why one home: the halt line of the live views, the chaos reviver and the protection
monitor each watch something from a thread of their own; how such a thread is made, started
and told to stop is the same for all of them, only what it does on each pass differs.
"""

from __future__ import annotations

import threading
from typing import Self


class BackgroundThread:
    """Start with ``start()`` (returns the object); ``_run`` loops until ``_stop`` is set."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _signal_stop(self, join_timeout: float | None = None) -> None:
        """Ask the loop to end; wait up to ``join_timeout`` s for it, if given."""
        self._stop.set()
        if join_timeout is not None:
            self._thread.join(join_timeout)

    def _run(self) -> None:
        raise NotImplementedError
