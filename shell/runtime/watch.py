"""``vigil up`` after start-up: keep every process alive, and say so.

The loop asks the supervisor to look at its processes (``Supervisor.supervise_once``) twice a
second. Each fact becomes a console line, and an event: ``process_restarted`` for a restart,
``process_crash_loop`` (critical, pages) when a process keeps dying and is given up on. The
``heartbeats`` row ``supervisor`` carries each process's restarts and the given-up ones, so
/health (component ``processes``) names them.

Events are written through an engine of their own (the harnesses share this process's
default one) and best effort: when PostgreSQL itself is what died, they wait in memory and
are written once it is back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.events import EventType, Severity, record
from core.services import heartbeat
from shell.runtime.supervisor import (
    Child,
    Note,
    Supervisor,
    WatchedServer,
    raise_if_stop_requested,
)

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
MAX_PENDING = 200
SUPERVISOR_COMPONENT = "supervisor"


def describe(note: Note) -> str:
    """The console line of one supervision fact."""
    at = datetime.now().strftime("%H:%M:%S")
    if note.kind == "died":
        return f"[{at}] {note.name} exited (code {note.exit_code}); restarting in {note.delay:.1f}s"
    if note.kind == "restarted":
        return f"[{at}] {note.name} restarted (restart {note.restarts})"
    if note.kind == "restart_failed":
        return f"[{at}] {note.name} did not start again: {note.error}"
    return (
        f"[{at}] {note.name} keeps dying ({note.restarts} restarts in the window): "
        "no longer restarted; see its log"
    )


class StackWatch:
    def __init__(
        self, supervisor: Supervisor, database_url: str, say: Callable[[str], None]
    ) -> None:
        self.supervisor = supervisor
        self.say = say
        self.engine = create_engine(
            database_url, poolclass=pool.NullPool, connect_args={"connect_timeout": 3}
        )
        self.pending: list[Note] = []
        self._beat_at = 0.0

    def run(self, poll: float = 0.5) -> None:
        """Until KeyboardInterrupt (Ctrl-C, SIGTERM): the caller stops the stack."""
        while True:
            raise_if_stop_requested()
            self.step()
            time.sleep(poll)

    def step(self) -> list[Note]:
        notes = self.supervisor.supervise_once()
        for note in notes:
            self.say(describe(note))
            level = logging.CRITICAL if note.kind == "crash_loop" else logging.WARNING
            log.log(level, describe(note))
        if note_worthy := [n for n in notes if n.kind in ("restarted", "crash_loop")]:
            self.pending = [*self.pending, *note_worthy][-MAX_PENDING:]
        if self.pending or notes or time.monotonic() - self._beat_at >= HEARTBEAT_SECONDS:
            self._write()
        return notes

    def status(self) -> dict[str, Any]:
        """Each process's restarts, and the ones given up on (the heartbeat's info)."""
        units: list[Child | WatchedServer] = [*self.supervisor.servers, *self.supervisor.children]
        return {
            "pid": os.getpid(),
            "given_up": self.supervisor.given_up(),
            "restarts": {u.name: len(u.life.restarts) for u in units if u.life.restarts},
            "last_restart_at": {
                u.name: datetime.fromtimestamp(u.life.last_restart_wall, UTC).isoformat()
                for u in units
                if u.life.last_restart_wall is not None
            },
        }

    def _write(self) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                for note in self.pending:
                    _record(session, note, self.supervisor)
                heartbeat.beat(session, SUPERVISOR_COMPONENT, datetime.now(UTC), **self.status())
        except SQLAlchemyError as exc:
            log.info("supervision not recorded yet: %s", str(exc).splitlines()[0])
            return
        self.pending = []
        self._beat_at = time.monotonic()

    def close(self) -> None:
        self.engine.dispose()


def _record(session: Session, note: Note, supervisor: Supervisor) -> None:
    """A restart is a warning; a crash loop (no more restarts) is critical and says its window."""
    if note.kind == "crash_loop":
        event, severity = EventType.PROCESS_CRASH_LOOP, Severity.CRITICAL
        extra: dict[str, Any] = {"window_seconds": supervisor.policy.crash_loop_window}
    else:
        event, severity, extra = EventType.PROCESS_RESTARTED, Severity.WARNING, {}
    record(
        session,
        event,
        severity=severity,
        component="vigil-up",
        process=note.name,
        exit_code=note.exit_code,
        restarts=note.restarts,
        **extra,
    )
