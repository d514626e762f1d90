"""A Ctrl-C is never lost: `vigil up`'s wait ends even when the KeyboardInterrupt raised by
the signal handler landed in a finalizer, where Python prints it and drops it.

A real process runs the supervisor's wait loops; inside an object's ``__del__`` it receives
SIGINT (as a garbage-collected database connection would, at the wrong moment), and must
still stop its child and exit within a poll or two.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import signal, sys, tempfile
    from pathlib import Path
    from shell.runtime.supervisor import Supervisor
    from shell.runtime.watch import StackWatch

    sup = Supervisor(env={}, log_dir=Path(tempfile.mkdtemp()))
    child = sup.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    sup.install_signal_handlers()

    class DroppedAtFinalization:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # its KeyboardInterrupt is printed and dropped

    DroppedAtFinalization()
    print("interrupt dropped; waiting", flush=True)
    try:
        if sys.argv[1] == "watch":
            StackWatch(sup, "postgresql+psycopg2://nobody@127.0.0.1:1/none", print).run(0.05)
        else:
            sup.wait(0.05)
    except KeyboardInterrupt as exc:
        sup.stop(timeout=5)
        print(f"stopped on {exc}; child exit {child.proc.returncode}", flush=True)
        raise SystemExit(0)
    raise SystemExit(3)
    """
)


@pytest.mark.parametrize("loop", ["wait", "watch"])
def test_a_stop_signal_dropped_by_a_finalizer_still_stops_the_wait(loop):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, loop],
        capture_output=True,
        text=True,
        timeout=60,  # the loop without the remembered signal never returns
    )
    # the interrupt really was dropped where the test put it, not delivered
    assert "Exception ignored" in proc.stderr and "KeyboardInterrupt" in proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped on SIGINT; child exit" in proc.stdout
    assert "child exit None" not in proc.stdout  # the child was stopped, not left behind


SECOND_RUN = textwrap.dedent(
    """
    import signal, sys, tempfile
    from pathlib import Path
    from shell.runtime.supervisor import Supervisor

    first = Supervisor(env={}, log_dir=Path(tempfile.mkdtemp()))
    first.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    first.install_signal_handlers()
    try:
        signal.raise_signal(signal.SIGINT)
        first.wait(0.05)
    except KeyboardInterrupt:
        first.stop(timeout=5)
    print("first run stopped", flush=True)

    second = Supervisor(env={}, log_dir=Path(tempfile.mkdtemp()))
    child = second.spawn("short", [sys.executable, "-c", "import time; time.sleep(1)"])
    second.install_signal_handlers()
    try:
        dead = second.wait(0.05)
    except KeyboardInterrupt as exc:
        second.stop(timeout=5)
        print(f"second run stopped at once on {exc}", flush=True)
        raise SystemExit(3)
    print(f"second run waited for {dead.name}: exit {dead.proc.returncode}", flush=True)
    """
)


def test_a_stop_of_an_earlier_run_does_not_stop_the_next_run_in_the_same_process():
    proc = subprocess.run(
        [sys.executable, "-c", SECOND_RUN], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first run stopped" in proc.stdout
    assert "second run waited for short: exit 0" in proc.stdout
