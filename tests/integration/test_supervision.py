"""`vigil up` supervises: a child that dies is started again, one that keeps dying is given up
on (named), and a SIGKILLed worker or embedded Redis under a real `vigil up` is back within
10 s while the rest of the stack keeps running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from core.domain.restarts import RestartPolicy
from shell.runtime.supervisor import Supervisor
from tests.integration.test_vigil_up import (  # noqa: F401 - up_env is a fixture
    ports_of,
    processes_of,
    start_up,
    up_env,
    wait_for_line,
)

pytestmark = pytest.mark.integration
BACK_WITHIN_SECONDS = 10.0


def test_a_dead_child_is_restarted_and_one_that_keeps_dying_is_given_up(tmp_path):
    policy = RestartPolicy(first_delay=0.05, max_delay=0.1, crash_loop_restarts=3)
    sup = Supervisor(env=dict(os.environ), log_dir=tmp_path, policy=policy)
    sleeper = sup.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup.spawn("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        notes = []
        deadline = time.monotonic() + 30
        while "crasher" not in sup.given_up():
            assert time.monotonic() < deadline, notes
            notes += sup.supervise_once()
            time.sleep(0.02)
        kinds = [(n.kind, n.name) for n in notes]
        assert kinds.count(("restarted", "crasher")) == 3
        assert kinds[-1] == ("crash_loop", "crasher") and notes[-1].exit_code == 3
        assert all(name == "crasher" for _, name in kinds)  # the sleeper was left alone

        first_pid = sleeper.proc.pid
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not (sleeper.running and sleeper.proc.pid != first_pid):
            assert time.monotonic() < deadline
            sup.supervise_once()
            time.sleep(0.02)
        assert sleeper.life.restarts and sup.given_up() == ["crasher"]
    finally:
        sup.stop()


def health(url: str) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


def test_sigkill_of_a_worker_and_of_redis_under_vigil_up_is_healed(up_env):  # noqa: F811
    up_env["VIGIL_EXCHANGE"] = "paper"
    up_env["VIGIL_API_KEY"] = "own-key-3b8c"  # the paper exchange must accept these
    up_env["VIGIL_API_SECRET"] = "own-secret-5d1e"
    redis_port = int(up_env["VIGIL_EMBEDDED_REDIS_PORT"])
    pg_port = int(up_env["VIGIL_EMBEDDED_PG_PORT"])
    proc = start_up(up_env)
    try:
        wait_for_line(proc, "Ctrl-C stops everything", timeout=180)
        worker = _main_worker(proc.pid)
        redis_server = _listener(proc.pid, redis_port)
        postmaster = _listener(proc.pid, pg_port)
        for victim in (worker, redis_server, postmaster):
            victim.kill()
        killed = time.monotonic()
        deadline = killed + BACK_WITHIN_SECONDS
        while True:
            new_worker = _main_worker(proc.pid, not_pid=worker.pid)
            new_redis = _listener(proc.pid, redis_port, not_pid=redis_server.pid)
            new_pg = _listener(proc.pid, pg_port, not_pid=postmaster.pid)
            if new_worker and new_redis and new_pg:
                break
            assert proc.poll() is None, "vigil up stopped"
            assert time.monotonic() < deadline, "not back within 10 s"
            time.sleep(0.2)
        print(f"worker, redis and postgres back {time.monotonic() - killed:.1f}s after SIGKILL")
        wait_for_line(proc, "restarted (restart 1)", timeout=5)
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{up_env['VIGIL_EMBEDDED_PG_PORT']}/vigil"
        engine = create_engine(url, pool_pre_ping=True)
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                restarted = set(
                    conn.execute(
                        text("SELECT data->>'process' FROM events WHERE type='process_restarted'")
                    ).scalars()
                )
            if {"worker1", "redis", "postgres"} <= restarted:
                break
            assert time.monotonic() < deadline, restarted
            time.sleep(0.5)
        engine.dispose()
        api = f"http://127.0.0.1:{up_env['VIGIL_API_PORT']}"
        body = health(api)
        assert body["components"]["exchange"]["status"] == "ok", body  # signed calls pass
        assert body["components"]["processes"]["restarts"] == {
            "postgres": 1,
            "redis": 1,
            "worker1": 1,
        }
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _descendants(up_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(up_pid).children(recursive=True)
    except psutil.Error:
        return []


def _main_worker(up_pid: int, not_pid: int | None = None) -> psutil.Process | None:
    """worker1's main process (the Celery parent, a direct child of `vigil up`)."""
    for p in psutil.Process(up_pid).children():
        try:
            cmd = p.cmdline()
            if "worker" in cmd and "worker1" in cmd and p.pid != not_pid and p.is_running():
                if p.status() != psutil.STATUS_ZOMBIE:
                    return p
        except psutil.Error:
            continue
    return None


def _listener(up_pid: int, port: int, not_pid: int | None = None) -> psutil.Process | None:
    for p in _descendants(up_pid):
        try:
            listening = {
                c.laddr.port for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN
            }
        except psutil.Error:
            continue
        if port in listening and p.pid != not_pid:
            return p
    return None


def test_after_kill_9_of_vigil_up_the_next_one_starts_and_two_at_once_are_refused(
    up_env,  # noqa: F811
):
    home = Path(up_env["VIGIL_HOME"]).resolve()
    first = start_up(up_env)
    try:
        wait_for_line(first, "Ctrl-C stops everything", timeout=180)
        second = start_up(up_env)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 2
        said = out.replace("\n", "")  # the console wraps long lines
        assert f"another `vigil up` (pid {first.pid}) runs on VIGIL_HOME={home}" in said, out
        orphans = {p.pid for p in psutil.Process(first.pid).children()}
        first.kill()  # kill -9: its children and embedded servers are orphaned
        first.wait(10)
        assert orphans and all(psutil.pid_exists(pid) for pid in orphans)

        again = start_up(up_env)
        out = wait_for_line(again, "Ctrl-C stops everything", timeout=180)
        assert "left running by an earlier vigil up" in out
        assert not any(_alive(pid) for pid in orphans), "an orphan of the first life survived"
        again.send_signal(signal.SIGINT)
        assert again.wait(60) == 0
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert processes_of(home, ports_of(up_env)) == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_up_uses_a_paper_exchange_already_answering_at_the_exchange_url(up_env):  # noqa: F811
    up_env.update(VIGIL_EXCHANGE="paper", VIGIL_API_KEY="k-41", VIGIL_API_SECRET="s-41")
    port = up_env["VIGIL_EXCHANGE_URL"].rsplit(":", 1)[1]
    sim = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "sim", "--port", port, "--memory-only"],
        env=up_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc = None
    try:
        deadline = time.monotonic() + 30
        while not _answers(up_env["VIGIL_EXCHANGE_URL"]):
            assert time.monotonic() < deadline and sim.poll() is None
            time.sleep(0.2)
        proc = start_up(up_env)
        out = wait_for_line(proc, "Ctrl-C stops everything", timeout=180)
        assert "Paper exchange" in out
        assert all("sim" not in c.cmdline() for c in psutil.Process(proc.pid).children())
        api = f"http://127.0.0.1:{up_env['VIGIL_API_PORT']}"
        deadline = time.monotonic() + 30
        while (found := health(api).get("components", {}).get("exchange", {})).get(
            "status"
        ) != "ok":
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert sim.poll() is None  # not ours to stop
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        sim.kill()
        sim.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_sim/state", timeout=2):
            return True
    except OSError:
        return False
