"""Child processes of ``vigil up``: started in order, stopped in reverse, nothing left behind.

Each child runs in its own session (process group) so that a stop reaches its grandchildren
too (Celery's pool, Flower's threads); on any way out (Ctrl-C, SIGTERM, a child that dies, an
error while starting) every child still running is terminated, then killed if it lingers.
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


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stop_signal: int = signal.SIGTERM

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stop_callbacks: list[Callable[[], None]] = field(default_factory=list)
    _stopping: bool = False

    def spawn(self, name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, self.log_dir / f"{name}.log", stop_signal=stop_signal)
        log = child.log_path.open("ab")
        child.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        self.children.append(child)
        return child

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
        def handler(signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt(signal.Signals(signum).name)

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


def _signal_group(child: Child, sig: int, only_group: bool = False) -> None:
    if child.proc is None:
        return
    try:
        os.killpg(child.proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        if not only_group and child.proc.poll() is None:
            child.proc.send_signal(sig)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
