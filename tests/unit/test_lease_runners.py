"""The threads that renew leases are kept between leases (``core.lock_watchdog._Runners``).

What must hold: a lease is always renewed on schedule whichever runner takes it (a fresh one,
one kept idle, one that was about to time out); ``stop`` returns only once no renewal is under
way, so none lands after it; a forked child, which has none of its parent's threads, renews
its leases on threads of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from core import lock_watchdog
from core.lock_watchdog import LeaseWatchdog


def poll_until(probe, deadline_s: float = 5.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return True
        time.sleep(0.005)
    return probe()


@pytest.fixture
def runners(monkeypatch):
    """A runner pool of this test's own (not one other tests' leases left threads in)."""
    fresh = lock_watchdog._Runners()
    monkeypatch.setattr(lock_watchdog, "_RUNNERS", fresh)
    return fresh


def counting_lease(ttl_s: float = 0.15) -> tuple[LeaseWatchdog, list[float]]:
    renewed: list[float] = []
    return LeaseWatchdog(lambda: renewed.append(time.monotonic()) or True, ttl_s, name="t"), renewed


def test_one_thread_serves_leases_one_after_another(runners):
    for _ in range(30):
        lease, renewed = counting_lease()
        lease.start()
        assert poll_until(lambda r=renewed: len(r) >= 1)  # renewed on schedule, by some runner
        lease.stop()
        assert poll_until(lambda: runners._idle == 1)  # its thread is back, waiting
    assert runners.threads == 1


def test_leases_held_together_each_have_a_thread(runners):
    leases = [counting_lease() for _ in range(8)]
    for lease, _ in leases:
        lease.start()
    assert all(poll_until(lambda r=r: len(r) >= 2) for _, r in leases)
    for lease, _ in leases:
        lease.stop()
    assert poll_until(lambda: runners._idle == 8) and runners.threads == 8


def test_stop_waits_for_a_renewal_under_way_and_none_comes_after_it(runners):
    entered, leave = threading.Event(), threading.Event()
    renewals: list[float] = []

    def slow_renew() -> bool:
        entered.set()
        leave.wait(5)
        renewals.append(time.monotonic())
        return True

    lease = LeaseWatchdog(slow_renew, 0.15, name="slow").start()
    assert entered.wait(5)
    threading.Timer(0.2, leave.set).start()
    stopped = time.monotonic()
    lease.stop()
    returned = time.monotonic()
    assert renewals and renewals[0] <= returned  # the renewal under way ended first
    assert returned - stopped >= 0.15
    time.sleep(0.3)  # six renewal intervals
    assert len(renewals) == 1


def test_a_runner_that_times_out_idle_never_strands_a_lease(runners, monkeypatch):
    monkeypatch.setattr(lock_watchdog._Runners, "IDLE_S", 0.002)
    for i in range(200):
        lease, renewed = counting_lease(0.03)
        lease.start()
        assert poll_until(lambda r=renewed: len(r) >= 1, 5), f"lease {i} was never renewed"
        lease.stop()
        time.sleep(0.002 * (i % 3))  # around the idle timeout: before, at, after it
    assert poll_until(lambda: runners._idle == 0 and runners.threads == 0, 5)


def test_a_forked_child_renews_on_threads_of_its_own():
    script = textwrap.dedent(
        """
        import os, time
        from core.lock_watchdog import LeaseWatchdog

        def lease():
            renewed = []
            return LeaseWatchdog(lambda: renewed.append(1) or True, 0.15, name="x"), renewed

        parent, _ = lease()
        parent.start(); time.sleep(0.1); parent.stop(); time.sleep(0.1)  # a runner idles
        pid = os.fork()
        if pid == 0:
            child, renewed = lease()
            child.start(); time.sleep(0.6); child.stop()
            os._exit(0 if len(renewed) >= 2 else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == 0
