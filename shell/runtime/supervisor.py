"""Child processes of ``vigil up``: started in order, stopped in reverse, nothing left behind,
and restarted when one dies.

Each child runs in its own session (process group) so that a stop reaches its grandchildren
too (Celery's pool, Flower's threads); on any way out (Ctrl-C, SIGTERM, an error while
starting) every child still running is terminated, then killed if it lingers.

Once everything is up, ``supervise_once`` watches the children and the embedded servers
(``watch_server``): one that died is started again after a backoff, and one that keeps dying
(``core.domain.restarts``) is given up on, and reported as such. A child that dies while the
stack is still starting is a start-up failure instead (the caller stops with one line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from core.domain.restarts import RestartPolicy, decide


@dataclass
class Life:
    """What the supervisor remembers of one process between its deaths."""

    restarts: list[float] = field(default_factory=list)  # monotonic times
    due_at: float | None = None  # a restart is pending at this monotonic time
    given_up: bool = False  # a crash loop: not restarted any more
    last_exit: int | None = None
    last_restart_wall: float | None = None  # time.time() of the last restart (status view)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stop_signal: int = signal.SIGTERM
    life: Life = field(default_factory=Life)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class WatchedServer:
    """An embedded server (PostgreSQL, Redis) watched like a child; its owner stops it."""

    name: str
    server: Any  # EmbeddedPostgres | EmbeddedRedis: .proc, .start(), .log_path
    life: Life = field(default_factory=Life)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        proc: subprocess.Popen[bytes] | None = self.server.proc
        return proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        path: Path = self.server.log_path
        return path


@dataclass(frozen=True)
class Note:
    """One supervision fact, for the log, the events and the status view."""

    kind: Literal["died", "restarted", "restart_failed", "crash_loop"]
    name: str
    exit_code: int | None = None
    restarts: int = 0
    delay: float = 0.0
    error: str | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stop_callbacks: list[Callable[[], None]] = field(default_factory=list)
    servers: list[WatchedServer] = field(default_factory=list)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    on_started: Callable[[str, int], None] | None = None  # (name, pid) of each start
    _stopping: bool = False

    def spawn(self, name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, self.log_dir / f"{name}.log", stop_signal=stop_signal)
        self._start(child)
        self.children.append(child)
        return child

    def _start(self, child: Child) -> None:
        log = child.log_path.open("ab")
        child.proc = subprocess.Popen(
            child.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        self._started(child.name, child.proc)

    def _started(self, name: str, proc: subprocess.Popen[bytes] | None) -> None:
        if self.on_started is not None and proc is not None:
            self.on_started(name, proc.pid)

    def watch_server(self, name: str, server: Any) -> None:
        """Restart the embedded ``server`` too when it dies (it is stopped by its owner)."""
        self.servers.append(WatchedServer(name, server))

    def given_up(self) -> list[str]:
        return [u.name for u in self._units() if u.life.given_up]

    def _units(self) -> list[Child | WatchedServer]:
        return [*self.servers, *self.children]

    def supervise_once(self, now: float | None = None) -> list[Note]:
        """Look at every process once: schedule, run or refuse the restart of the dead."""
        now = time.monotonic() if now is None else now
        notes: list[Note] = []
        for unit in self._units():
            if self._stopping or unit.life.given_up or unit.running:
                continue
            life = unit.life
            if life.due_at is None:
                life.last_exit = unit.proc.returncode if unit.proc is not None else None
                decision = decide(self.policy, life.restarts, now)
                if not decision.restart:
                    life.given_up = True
                    notes.append(Note("crash_loop", unit.name, life.last_exit, decision.recent))
                    continue
                life.due_at = now + decision.delay
                notes.append(
                    Note("died", unit.name, life.last_exit, decision.recent, decision.delay)
                )
            elif now >= life.due_at:
                notes.append(self._restart(unit, now))
        return notes

    def _restart(self, unit: Child | WatchedServer, now: float) -> Note:
        life = unit.life
        life.due_at = None
        life.restarts.append(now)
        life.last_restart_wall = time.time()
        try:
            if isinstance(unit, Child):
                _signal_group(unit, signal.SIGKILL, only_group=True)  # its orphans
                self._start(unit)
            else:
                _kill_group_of(unit.proc)
                unit.server.proc = None
                unit.server.start()
                self._started(unit.name, unit.proc)
        except Exception as exc:  # noqa: BLE001 - a failed start counts as a death
            return Note("restart_failed", unit.name, restarts=len(life.restarts), error=str(exc))
        return Note("restarted", unit.name, life.last_exit, len(life.restarts))

    def kill_and_restart(self, name: str) -> Child:
        """SIGKILL the child ``name`` (and its group), then start it again with the same argv.

        What a container runtime does after a crash; the chaos harness uses it to prove that
        work interrupted by a kill -9 is recovered by the restarted (or another) process.
        """
        old = next(c for c in self.children if c.name == name)
        _signal_group(old, signal.SIGKILL)
        if old.proc is not None:
            old.proc.wait(10)
        self.children.remove(old)
        return self.spawn(name, old.argv, stop_signal=old.stop_signal)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the children stop (e.g. stop an embedded server)."""
        self.stop_callbacks.append(callback)

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, and are remembered.

        Why remembered: Python runs a signal handler at the main thread's next instruction,
        which may be inside a finalizer (a database connection's ``__del__``, a weakref
        callback of the garbage collector); an exception raised there is printed as
        "Exception ignored" and dropped, so the Ctrl-C would be lost and the stack would run
        on. The loops that wait for a stop (``wait``, ``vigil up``'s watch, the demo's and
        the chaos run's) call ``raise_if_stop_requested`` on every turn, so a dropped
        interrupt still ends them within one poll. The memory is the process's, as signals
        are: a stack started again inside the same run (the chaos run's stack kill) sees it.

        Installing the handlers starts a run, so the memory is emptied here: a stop received
        by an earlier run in the same process (a test, a program embedding the supervisor)
        was that run's and ended it; left in memory, it would stop the new run at its first
        wait. Nothing is lost by clearing here: before the handlers are installed, SIGINT
        and SIGTERM are Python's defaults, which nothing remembers.
        """
        _STOP_SIGNALS.clear()

        def handler(signum: int, _frame: FrameType | None) -> None:
            _STOP_SIGNALS.append(signal.Signals(signum).name)
            raise KeyboardInterrupt(_STOP_SIGNALS[0])

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def first_dead(self) -> Child | None:
        for child in self.children:
            if not child.running:
                return child
        return None

    def wait(self, poll: float = 0.5) -> Child:
        """Block until a child exits on its own; return it."""
        while True:
            raise_if_stop_requested()
            dead = self.first_dead()
            if dead is not None:
                return dead
            time.sleep(poll)

    def stop(self, timeout: float = 20.0) -> None:
        if self._stopping:
            return
        self._stopping = True
        for child in reversed(self.children):
            _signal_group(child, child.stop_signal)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.proc.wait(5)
            # reap anything left in the child's group (pool processes, threads' helpers)
            _signal_group(child, signal.SIGKILL, only_group=True)
        for callback in reversed(self.stop_callbacks):
            callback()


_STOP_SIGNALS: list[str] = []  # the stop signals this process received, in order


def raise_if_stop_requested() -> None:
    """KeyboardInterrupt if a stop signal arrived, even one whose exception was dropped."""
    if _STOP_SIGNALS:
        raise KeyboardInterrupt(_STOP_SIGNALS[0])


def _signal_group(child: Child, sig: int, only_group: bool = False) -> None:
    if child.proc is None:
        return
    try:
        os.killpg(child.proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        if not only_group and child.proc.poll() is None:
            child.proc.send_signal(sig)


def _kill_group_of(proc: subprocess.Popen[bytes] | None) -> None:
    """What a dead server leaves behind in its group (PostgreSQL's backends) goes too."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.poll()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
