"""During a chaos run a child that exits on its own is started again, as `vigil up` does;
one the harness is killing on purpose is left to the harness (real processes)."""

import os
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from shell.harness.chaos_revive import Reviver
from shell.runtime.supervisor import Supervisor

pytestmark = pytest.mark.integration

EXITS = [sys.executable, "-c", "pass"]
STAYS = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(env=dict(os.environ), log_dir=tmp_path)
    yield sup
    sup.stop()


def _chaos(sup):
    said = []
    chaos = SimpleNamespace(
        stack=SimpleNamespace(supervisor=sup), process_lock=threading.Lock(), say=said.append
    )
    return chaos, said


def test_a_child_that_exited_on_its_own_is_started_again_and_a_live_one_is_not(supervisor):
    supervisor.spawn("worker1", STAYS)
    gone = supervisor.spawn("worker2", EXITS)
    gone.proc.wait(10)
    chaos, said = _chaos(supervisor)

    assert Reviver(chaos).revive_once() == ["worker2"]

    names = sorted(c.name for c in supervisor.children)
    assert names == ["worker1", "worker2"]  # one of each: nothing doubled
    assert said == ["worker2 exited on its own (code 0); started again"]


def test_the_reviver_waits_while_the_harness_holds_the_process_lock(supervisor):
    child = supervisor.spawn("worker1", EXITS)
    child.proc.wait(10)
    chaos, _ = _chaos(supervisor)
    reviver = Reviver(chaos, interval=0.05)
    with chaos.process_lock:  # the harness is killing and restarting processes itself
        reviver.start()
        threading.Event().wait(0.3)
        assert reviver.revived == []
    deadline = time.monotonic() + 10
    while not reviver.revived and time.monotonic() < deadline:
        time.sleep(0.05)
    reviver.stop()
    assert reviver.revived and reviver.revived[0] == "worker1"
