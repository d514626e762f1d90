"""What every benchmark needs: its own storage and paper exchange, worker subprocesses,
percentiles, and a line describing the machine the numbers came from.

A benchmark runs against embedded PostgreSQL and Redis in a temporary directory and an
in-process paper exchange, so one command reproduces it anywhere the test suite runs, and
it never touches an operator's database. Settings reach the code under test the way they
reach a deployment: ``VIGIL_*`` environment variables, inherited by worker subprocesses.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from core.clock import SYSTEM_CLOCK
from core.config import get_settings, load_settings
from core.db import migrate
from core.db import session as db_session
from core.db.session import unit_of_work
from core.endpoints import embedded_database_url, embedded_redis_url
from core.exchange.adapter import ExchangeAdapter
from core.exchange.factory import build_exchange
from core.services.deps import Deps
from shell.runtime.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from sim.runner import SimServer
from sim.state import SimOptions

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]

# every table the engine writes, emptied between runs of a benchmark
TABLES = (
    "aged_position_transitions, aged_positions, trailing_stops, orders, alerts, events, "
    "positions, signals, waves, heartbeats"
)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile by rank (no interpolation: a reported p99 is a real sample)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ping_round_trips(app: Any, n: int) -> list[float]:
    """Seconds each of ``n`` no-op tasks on the ``stops`` queue takes, send -> run -> result.

    One ping first, unmeasured: it waits for the worker to be up and pays its connection set-up.
    """
    app.send_task("vigil.maintenance.ping", queue="stops", ignore_result=False).get(timeout=60)
    rtts = []
    for _ in range(n):
        started = time.perf_counter()
        app.send_task("vigil.maintenance.ping", queue="stops", ignore_result=False).get(timeout=30)
        rtts.append(time.perf_counter() - started)
    return rtts


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.01) -> T:
    """Poll ``predicate`` until it is truthy; a benchmark that stalls says what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def machine() -> str:
    """Cores, memory, CPU model and load: what a reader needs to compare numbers."""
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores ({model}), {mem_kib / 1024 / 1024:.0f} GiB, "
        f"Python {platform.python_version()}, load average at start {load}"
    )


@dataclass
class BenchEnv:
    """Embedded PostgreSQL (fsync on) + Redis + paper exchange, wired through ``VIGIL_*``."""

    sim: SimServer
    home: Path
    env: dict[str, str]
    redis_port: int

    def deps(self, **overrides: Any) -> Deps:
        """In-process Deps on the paper exchange (markets and leverage brackets loaded, so
        the first measured call does not pay ccxt's one-time loading)."""
        settings = load_settings(exchange_url=self.sim.url, **overrides)
        client = build_exchange("paper", url=self.sim.url, api_key="paper", api_secret="paper")
        adapter = ExchangeAdapter(client)
        adapter.load_markets()
        adapter.positions()
        return Deps(settings, adapter, redis.Redis(port=self.redis_port), SYSTEM_CLOCK)

    def truncate(self, attempts: int = 5) -> None:
        """Empty the engine's tables (not the broker: workers keep their queues).

        A worker finishing a no-op step (a late duplicate advance) may still hold a row
        lock; the truncate then loses a deadlock and is simply tried again.
        """
        for attempt in range(attempts):
            try:
                with unit_of_work() as s:
                    s.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
                return
            except OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)

    def requests_since(self, index: int) -> list[dict[str, Any]]:
        """The simulator's request log from ``index`` on (every REST call, with its weight)."""
        return list(self.sim.requests(index)["requests"])

    def request_index(self) -> int:
        return int(self.sim.requests()["next"])


@dataclass(frozen=True)
class Stores:
    """The embedded PostgreSQL and Redis of one benchmark run, and the home beside them."""

    home: Path
    database_url: str
    redis_port: int


@contextmanager
def embedded_stores(prefix: str, keep_home: bool = False, **settings_env: str) -> Iterator[Stores]:
    """Start PostgreSQL (migrated) and Redis in a fresh home and point this process's settings
    (and every worker it starts, through the environment) at them; stop both at the end and
    remove the home unless ``keep_home`` (profiles written there are kept)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(home / "pg" / "data", free_port())
    rds = EmbeddedRedis(home / "redis", free_port(), persist=False)
    pg.start()
    rds.start()
    try:
        pg.create_database("vigil_bench")
        url = embedded_database_url(pg.port, "vigil_bench")
        migrate.upgrade(url)
        os.environ.update(
            VIGIL_DATABASE_URL=url,
            VIGIL_REDIS_URL=embedded_redis_url(rds.port),
            VIGIL_HOME=str(home),
            **settings_env,
        )
        get_settings.cache_clear()
        db_session.configure(url)
        yield Stores(home, url, rds.port)
    finally:
        rds.stop()
        pg.stop()
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def bench_env(options: SimOptions, **settings_env: str) -> Iterator[BenchEnv]:
    """Start storage and the paper exchange; ``settings_env`` are extra ``VIGIL_*`` values
    for this process and every worker it starts."""
    with embedded_stores("vigil-bench-", keep_home=True) as stores:
        sim = SimServer(options).start()
        try:
            env = dict(
                os.environ,
                VIGIL_EXCHANGE="paper",
                VIGIL_EXCHANGE_URL=sim.url,
                **settings_env,
            )
            os.environ.update(env)
            get_settings.cache_clear()
            yield BenchEnv(sim, stores.home, env, stores.redis_port)
        finally:
            sim.stop()


@dataclass
class Workers:
    """Celery worker subprocesses, each in its own process group (a stop takes its pool)."""

    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, count: int, queues: str, concurrency: int = 1, prefix: str = "bench"
    ) -> list[str]:
        """Start ``count`` worker nodes (``vigil worker``); returns their node names."""
        names = []
        for i in range(count):
            name = f"{prefix}{i + 1}"
            argv = [sys.executable, "-m", "shell.cli", "worker", "--name", name]
            argv += ["--queues", queues, "--concurrency", str(concurrency)]
            self.procs.append(
                subprocess.Popen(
                    argv,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            names.append(name)
        return names

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()


def wait_for_nodes(celery: Any, count: int, timeout: float = 90.0) -> None:
    """Until ``count`` worker nodes answer a broadcast ping (all started and consuming)."""
    wait_until(
        lambda: len(celery.control.ping(timeout=0.5)) >= count,
        timeout,
        f"{count} worker node(s) to answer",
        poll=0.2,
    )


def drain(celery: Any, queue: str, rounds: int, timeout: float = 60.0) -> None:
    """Run ``rounds`` no-op tasks on ``queue`` to completion: with prefetch 1, whatever was
    queued before them (a worker's start-up recovery and reconciliation) has run too."""
    results = [
        celery.send_task("vigil.maintenance.ping", queue=queue, ignore_result=False)
        for _ in range(rounds)
    ]
    for result in results:
        result.get(timeout=timeout)


# --- the paper exchange in a process of its own, and A/B runs against a revision -------------


def serve_sim(symbols: int, interval: float, port_file: str) -> None:
    """``--serve-sim``: the paper exchange with frozen prices (``symbols`` synthetic markets
    pushed every ``interval`` s on the all-market stream), its port written to ``port_file``,
    until SIGTERM or SIGINT."""
    options = SimOptions(
        seed=1,
        symbols=["BTCUSDT"],
        synthetic_symbols=symbols,
        scenario="frozen",
        tick_interval=interval,
    )
    server = SimServer(options).start()
    Path(port_file).write_text(str(server.port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def export_revision(ref: str, into: Path) -> Path:
    """The tree of ``ref`` as files: the code a ``--compare REF`` run measures, put first on
    the measured process's path (``code_env``) while the working tree measures the other
    side, so a before/after ratio comes from one run on one machine."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def code_env(env: dict[str, str], code: Path) -> dict[str, str]:
    """``env`` for a subprocess that must run ``code`` (the working tree or an exported
    revision) ahead of the installed package; start it with ``cwd=code`` too."""
    return dict(env, PYTHONPATH=str(code))


def cpu_seconds_self() -> float:
    """CPU (user + system) this process has spent so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
