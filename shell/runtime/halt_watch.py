"""The halt state as a line for the live views of `vigil up` and `vigil demo`.

Why: an operator watching the terminal of a running system must see at a glance that
openings are stopped (by `vigil halt`, a close-all, or a refused key), without querying
/health. ``openings_line`` renders the state; ``HaltWatch`` prints a line whenever it changes
(``vigil up`` has no redrawn view, only its log of what happened).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from core.services import halts
from shell.runtime.background import BackgroundThread


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


class HaltWatch(BackgroundThread):
    """Print a line each time the halt state changes, from a daemon thread."""

    def __init__(self, emit: Callable[[str], None], interval: float = 2.0) -> None:
        super().__init__("halt-watch")
        self.emit = emit
        self.interval = interval

    def stop(self) -> None:
        self._signal_stop()

    def _run(self) -> None:
        last: str | None = None
        while not self._stop.is_set():
            line = openings_line()
            if line != last:
                self.emit(f"openings: {line}")
                last = line
            self._stop.wait(self.interval)
