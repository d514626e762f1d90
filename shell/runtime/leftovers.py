"""A crash of ``vigil up`` is not sticky: what it left running is found and stopped.

``vigil up`` keeps, under ``VIGIL_HOME/run``:

- ``vigil-up.lock``: held (``flock``) for the life of the process. The kernel drops it when
  the process dies, even by SIGKILL, so a second ``vigil up`` on the same home is refused
  while the first lives, and never refused because the first died.
- ``<name>.pid``: the pid and start time of each process it started (embedded servers,
  workers, beat, ...). On the next start, each one still alive (not a zombie, same start
  time: not a recycled pid) is stopped with its process group before anything starts, so
  an orphaned Redis or postmaster no longer holds its port or data directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil

STOP_WAIT_SECONDS = 10.0
SERVERS = ("postgres", "redis")  # stopped after the processes that use them


class HomeBusy(RuntimeError):
    """Another ``vigil up`` runs on this VIGIL_HOME."""


def run_dir(home: Path) -> Path:
    path = home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


class HomeLock:
    """The ``vigil up`` of one VIGIL_HOME; released on ``release()`` or by death."""

    def __init__(self, home: Path) -> None:
        self.path = run_dir(home) / "vigil-up.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise HomeBusy(
                f"another `vigil up` (pid {holder}) runs on VIGIL_HOME={self.path.parent.parent}"
                "; stop it first or use another VIGIL_HOME"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def record_pid(home: Path, name: str, pid: int) -> None:
    """Remember a started process (pid and start time, against pid reuse)."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return
    (run_dir(home) / f"{name}.pid").write_text(f"{pid} {started}\n")


def forget_pids(home: Path) -> None:
    for path in run_dir(home).glob("*.pid"):
        path.unlink(missing_ok=True)


def is_alive(pid: int) -> bool:
    """A process that runs: a zombie (dead, not yet reaped) does not."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def stop_leftovers(home: Path, say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Stop every process an earlier ``vigil up`` of ``home`` started and left running."""
    stopped: list[str] = []
    servers_last = sorted(run_dir(home).glob("*.pid"), key=lambda p: (p.stem in SERVERS, p.stem))
    for path in servers_last:
        found = _leftover(path)
        path.unlink(missing_ok=True)
        if found is None:
            continue
        say(f"stopping {path.stem} (pid {found.pid}) left running by an earlier vigil up")
        _stop_group(found)
        stopped.append(path.stem)
    return stopped


def _leftover(path: Path) -> psutil.Process | None:
    try:
        pid_text, started_text = path.read_text().split()
        proc = psutil.Process(int(pid_text))
        if abs(proc.create_time() - float(started_text)) > 0.01 or not is_alive(proc.pid):
            return None
        return proc
    except (ValueError, OSError, psutil.Error):
        return None


def _stop_group(proc: psutil.Process) -> None:
    """SIGTERM the process's group (its own, as every child of vigil up), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            proc.send_signal(sig)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and is_alive(proc.pid):
            time.sleep(0.1)
        if not is_alive(proc.pid):
            return
