"""The halt state as a line for the live views of `vigil up` and `vigil demo`.

Why: an operator watching the terminal of a running system must see at a glance that
openings are stopped (by `vigil halt`, a close-all, or a refused key), without querying
/health. ``openings_line`` renders the state; ``HaltWatch`` prints a line whenever it changes
(``vigil up`` has no redrawn view, only its log of what happened).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from core.services import halts


def describe(current: Sequence[halts.HaltState]) -> str:
    """``open``, or what stops openings: source, scope, who, since when, why."""
    if not current:
        return "open"
    parts = [
        f"{h.source} halt of {'every venue' if h.scope == '*' else h.scope} by {h.halted_by}"
        f" since {h.halted_at:%H:%M:%S}: {h.reason}"
        for h in current
    ]
    head = "PAUSED" if all(h.source == "maintenance" for h in current) else "HALTED"
    return f"{head} ({'; '.join(parts)})"


def openings_line() -> str:
    """The halt state now; ``unknown`` while the database cannot be read."""
    try:
        return describe(halts.current())
    except SQLAlchemyError:
        return "unknown (database unreachable)"


class HaltWatch:
    """Print a line each time the halt state changes, from a daemon thread."""

    def __init__(self, emit: Callable[[str], None], interval: float = 2.0) -> None:
        self.emit = emit
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="halt-watch", daemon=True)

    def start(self) -> HaltWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last: str | None = None
        while not self._stop.is_set():
            line = openings_line()
            if line != last:
                self.emit(f"openings: {line}")
                last = line
            self._stop.wait(self.interval)
