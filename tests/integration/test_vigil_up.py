"""`vigil up` as a user runs it: everything starts, answers, and Ctrl-C leaves nothing behind."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from shell.runtime.embedded import free_port

pytestmark = pytest.mark.integration


def processes_of(home: Path, ports: set[int] = frozenset()) -> list[psutil.Process]:
    """Every live process started for this VIGIL_HOME: by argv, environment or listening port.

    Redis rewrites its own title and environment block, so it is found by its port.
    """
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            env = proc.environ() if str(home) not in cmdline else {}
            listening = (
                {
                    c.laddr.port
                    for c in proc.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN
                }
                if ports
                else set()
            )
            if str(home) in cmdline or env.get("VIGIL_HOME") == str(home) or listening & set(ports):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "up", "--concurrency", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if needle in line:
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"{needle!r} not printed; output:\n{''.join(seen)}")


def ports_of(env: dict[str, str]) -> set[int]:
    return {
        int(env[k])
        for k in ("VIGIL_EMBEDDED_PG_PORT", "VIGIL_EMBEDDED_REDIS_PORT", "VIGIL_FLOWER_PORT")
    }


@pytest.fixture
def up_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        VIGIL_HOME=str(tmp_path / "home"),
        VIGIL_EMBEDDED_PG_PORT=str(free_port()),
        VIGIL_EMBEDDED_REDIS_PORT=str(free_port()),
        VIGIL_FLOWER_PORT=str(free_port()),
        VIGIL_API_PORT=str(free_port()),
        VIGIL_EXCHANGE_URL=f"http://127.0.0.1:{free_port()}",
        VIGIL_HEARTBEAT_INTERVAL="1",
        VIGIL_EXCHANGE="binanceusdm",  # the paper exchange has tests of its own
    )
    yield env
    for proc in processes_of(Path(env["VIGIL_HOME"]).resolve(), ports_of(env)):
        proc.kill()


def test_up_starts_everything_and_ctrl_c_stops_everything(up_env):
    home = Path(up_env["VIGIL_HOME"]).resolve()
    proc = start_up(up_env)
    try:
        out = wait_for_line(proc, "Ctrl-C stops everything", timeout=180)
        assert "Flower" in out and "Worker round trip" in out and "Health / metrics" in out
        assert f"http://127.0.0.1:{up_env['VIGIL_API_PORT']}/console" in out
        names = {p.name() for p in processes_of(home, ports_of(up_env))}
        assert "postgres" in names and "redis-server" in names

        url = f"postgresql+psycopg2://postgres@127.0.0.1:{up_env['VIGIL_EMBEDDED_PG_PORT']}/vigil"
        engine = create_engine(url)
        deadline = time.monotonic() + 60
        beat_seen = False
        while time.monotonic() < deadline and not beat_seen:
            with engine.connect() as conn:
                beat_seen = bool(
                    conn.execute(text("SELECT 1 FROM heartbeats WHERE component = 'beat'")).first()
                )
            time.sleep(0.5)
        assert beat_seen, "beat's heartbeat never reached the database"
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (type, severity, data) "
                    "VALUES ('restart_marker', 'info', '{}')"
                )
            )
        engine.dispose()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert processes_of(home, ports_of(up_env)) == []

    # data survives a restart
    proc = start_up(up_env)
    try:
        wait_for_line(proc, "Ctrl-C stops everything", timeout=180)
        engine = create_engine(url)
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM events WHERE type = 'restart_marker'")
            ).scalar()
        engine.dispose()
        assert count == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert processes_of(home, ports_of(up_env)) == []


def test_up_refuses_a_port_in_use_and_leaves_nothing_running(up_env):
    home = Path(up_env["VIGIL_HOME"]).resolve()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(up_env["VIGIL_EMBEDDED_REDIS_PORT"])))
        blocker.listen()
        proc = start_up(up_env)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "in use" in out and "VIGIL_EMBEDDED_REDIS_PORT" in out
    assert "Traceback" not in out
    assert processes_of(home, ports_of(up_env)) == []


def test_up_refuses_a_bad_setting_in_one_line(up_env):
    env = dict(up_env, VIGIL_LEVERAGE="lots")
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "VIGIL_LEVERAGE" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_db_upgrade_reports_an_unreachable_database(up_env):
    env = dict(up_env, VIGIL_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "database unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
