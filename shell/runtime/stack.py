"""The whole system as processes on one machine: what ``vigil up`` (and the demo) start.

Order matters: storage first (embedded or external, checked either way), then the schema, then
the paper exchange if it is the exchange in use, then workers, beat, Flower and the ingest.
Every child gets the resolved database and Redis URLs in its environment, so no child guesses.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import OperationalError

from core.config import Settings, SettingsError
from core.db import migrate
from core.domain.restarts import RestartPolicy
from core.endpoints import embedded_database_url, embedded_redis_url, normalise_database_url
from core.venues import VenueConfig, check_venues, default_venue
from shell.runtime.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    free_port,
    port_in_use,
)
from shell.runtime.leftovers import HomeBusy, HomeLock, forget_pids, record_pid, stop_leftovers
from shell.runtime.supervisor import Supervisor
from shell.runtime.watch import StackWatch

ALL_QUEUES = "signals,orders,stops,maintenance"


class StartupError(RuntimeError):
    """The system cannot start; the message says what to fix."""


@dataclass
class StackOptions:
    workers: int = 1
    concurrency: int = 2
    flower: bool = True
    sim: bool | None = None  # None: one per paper venue when VIGIL_EXCHANGE=paper
    signal_sim: bool = False
    ingest: bool | None = None  # None: always (signals if configured, prices, user data)
    api: bool = False
    sim_args: list[str] = field(default_factory=list)
    signal_sim_args: list[str] = field(default_factory=list)


@dataclass
class Endpoints:
    database_url: str
    redis_url: str
    exchange_url: str | None = None
    exchange_urls: dict[str, str] = field(default_factory=dict)  # venue -> its paper exchange
    flower_url: str | None = None
    signal_url: str | None = None
    api_url: str | None = None
    logs: Path | None = None


def check_database(url: str, timeout: int = 5) -> None:
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StartupError(f"database unreachable at {_redact(url)}: {reason}") from None
    finally:
        engine.dispose()


def check_redis(url: str, timeout: float = 5, loading_wait: float = 120) -> None:
    """Redis answers a ping, waiting while it loads its dataset after a restart.

    Why wait: a Redis started again on a large append-only file accepts connections and
    answers ``LOADING`` until the file is read; it is alive, not unreachable, and refusing
    to start then would turn every restart of a busy deployment into a failed one.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    deadline = time.monotonic() + loading_wait
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.BusyLoadingError as exc:
            if time.monotonic() >= deadline:
                raise StartupError(f"Redis at {_redact(url)} still loading: {exc}") from None
            time.sleep(0.2)
        except redis.RedisError as exc:
            raise StartupError(f"Redis unreachable at {_redact(url)}: {exc}") from None


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def _paper_exchange_answers(url: str) -> bool:
    """A paper exchange (its admin API) answers at ``url``."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/_sim/state", timeout=3) as response:  # noqa: S310
            return "wallet" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def restart_policy(settings: Settings) -> RestartPolicy:
    return RestartPolicy(
        first_delay=min(1.0, settings.process_restart_max_delay),
        max_delay=settings.process_restart_max_delay,
        crash_loop_restarts=settings.process_crash_loop_restarts,
        crash_loop_window=settings.process_crash_loop_minutes * 60,
    )


class Stack:
    """Storage and processes for one vigil installation under ``settings.home``."""

    def __init__(self, settings: Settings, options: StackOptions | None = None) -> None:
        self.settings = settings
        self.options = options or StackOptions()
        self.home = settings.home_dir
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.supervisor: Supervisor | None = None
        self.endpoints: Endpoints | None = None
        self._home_lock: HomeLock | None = None
        self.reused_exchange = False  # a paper exchange was already answering

    # --- storage ---------------------------------------------------------------------------

    def start_storage(self, say: Callable[[str], None] = lambda _: None) -> Endpoints:
        """Start (or check) storage; first claim the home and stop an earlier life's leftovers."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = HomeLock(self.home)
        try:
            lock.acquire()
        except HomeBusy as exc:
            raise StartupError(str(exc)) from None
        self._home_lock = lock
        stop_leftovers(self.home, say)
        try:
            if self.settings.database_url:
                db_url = normalise_database_url(self.settings.database_url)
            else:
                self.postgres = EmbeddedPostgres(
                    self.home / "postgres" / "data", self.settings.embedded_pg_port
                )
                self.postgres.start()
                self._remember("postgres", self.postgres.proc)
                db_url = embedded_database_url(self.settings.embedded_pg_port)
            check_database(db_url)
            if self.settings.redis_url:
                redis_url = self.settings.redis_url
            else:
                self.redis = EmbeddedRedis(self.home / "redis", self.settings.embedded_redis_port)
                self.redis.start()
                self._remember("redis", self.redis.proc)
                redis_url = embedded_redis_url(self.settings.embedded_redis_port)
            check_redis(redis_url)
        except EmbeddedServerError as exc:
            self.stop_storage()
            raise StartupError(str(exc)) from None
        except StartupError:
            self.stop_storage()
            raise
        self.endpoints = Endpoints(db_url, redis_url, logs=self.home / "logs")
        return self.endpoints

    def _remember(self, name: str, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            record_pid(self.home, name, proc.pid)

    def migrate(self) -> None:
        assert self.endpoints is not None
        migrate.upgrade(self.endpoints.database_url)

    def stop_storage(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    # --- processes -------------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        assert self.endpoints is not None
        env = dict(os.environ)
        env["VIGIL_HOME"] = str(self.home)
        env["VIGIL_DATABASE_URL"] = self.endpoints.database_url
        env["VIGIL_REDIS_URL"] = self.endpoints.redis_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start_processes(self) -> Supervisor:
        assert self.endpoints is not None
        opts, settings = self.options, self.settings
        sup = Supervisor(
            env=self.child_env(),
            log_dir=self.home / "logs",
            policy=restart_policy(settings),
            on_started=lambda name, pid: record_pid(self.home, name, pid),
        )
        self.supervisor = sup
        if self.postgres is not None:
            sup.watch_server("postgres", self.postgres)
        if self.redis is not None:
            sup.watch_server("redis", self.redis)
        py = [sys.executable, "-m", "shell.cli"]
        run_sim = opts.sim if opts.sim is not None else settings.exchange == "paper"
        if run_sim:
            for venue in self.venues():
                if venue.kind == "paper":
                    self._start_paper_exchange(sup, py, venue)
        for i in range(1, opts.workers + 1):
            sup.spawn(
                f"worker{i}",
                [*py, "worker", "--name", f"worker{i}", "--concurrency", str(opts.concurrency)],
            )
        for own in settings.venue_queues:  # a venue with workers of its own
            argv = [*py, "worker", "--venue", own, "--name", f"worker-{own}"]
            sup.spawn(f"worker-{own}", [*argv, "--concurrency", str(opts.concurrency)])
        sup.spawn("beat", [*py, "beat"])
        self._start_signal_path(sup, py)
        if opts.flower:
            self.endpoints.flower_url = _spawn_listening(
                sup, "flower", [*py, "flower"], settings.flower_port, "Flower", "VIGIL_FLOWER_PORT"
            )
        if opts.api:
            self.endpoints.api_url = _spawn_listening(
                sup, "api", [*py, "api"], settings.api_port, "the API", "VIGIL_API_PORT"
            )
        return sup

    def venues(self) -> list[VenueConfig]:
        """The venues of this deployment (``VIGIL_EXCHANGES``), checked: one line if not."""
        try:
            return check_venues(self.settings)
        except SettingsError as exc:
            raise StartupError(str(exc)) from None

    def process_name(self, kind: str, venue: str) -> str:
        """``sim`` / ``ingest`` for the default venue (as with one venue), ``sim-bybit``,
        ``ingest-bybit`` for another: one name per process in logs, pid files and status."""
        return kind if venue == default_venue(self.settings) else f"{kind}-{venue}"

    def _start_paper_exchange(self, sup: Supervisor, py: list[str], venue: VenueConfig) -> None:
        """Start one venue's paper exchange (with that venue's key pair, its account under
        VIGIL_HOME), or use the one already answering at the venue's URL.

        The child reads its key pair from the environment (``vigil sim --venue``: the
        venue's own VIGIL_<VENUE>_API_KEY / _SECRET, or VIGIL_API_KEY / SECRET for the
        default venue), never from the command line, so the engine's signed calls are
        accepted whatever the keys are. A port held by something that is not a paper
        exchange stops the start, as before.
        """
        assert self.endpoints is not None
        host, port = host_port(venue.url, 8710)
        self.endpoints.exchange_urls[venue.name] = venue.url
        if self.endpoints.exchange_url is None:
            self.endpoints.exchange_url = venue.url
        if port_in_use(port, host):
            if _paper_exchange_answers(venue.url):
                self.reused_exchange = True
                return
            setting = "VIGIL_EXCHANGE_URL"
            if venue.name != default_venue(self.settings):
                setting = f"VIGIL_{venue.name.upper()}_EXCHANGE_URL"
            raise StartupError(f"port {port} for the paper exchange is in use; set {setting}")
        state = self.home / "paper-exchange" / f"{venue.paper_dialect}.account"
        argv = [*py, "sim", "--host", host, "--port", str(port), "--state", str(state)]
        if venue.name != default_venue(self.settings):
            argv += ["--venue", venue.name]
        sup.spawn(self.process_name("sim", venue.name), [*argv, *self.options.sim_args])

    def _start_signal_path(self, sup: Supervisor, py: list[str]) -> None:
        """The signal source simulator (``--with-signal-sim``) and the ingest reading signals.

        The ingest starts when a signal source is configured (VIGIL_SIGNAL_URL) or simulated.
        The simulator listens on VIGIL_SIGNAL_SIM_PORT (a free port if that one is taken)
        with VIGIL_SIGNAL_TOKEN, or a token generated for this run; both reach the children
        through their environment, never a command line.
        """
        assert self.endpoints is not None
        opts, settings = self.options, self.settings
        signal_url = settings.signal_url
        venues = [venue.name for venue in self.venues()]
        if opts.signal_sim:
            port = settings.signal_sim_port
            if port_in_use(port):
                port = free_port()
            token = settings.signal_token.get_secret_value() if settings.signal_token else ""
            signal_url = f"ws://127.0.0.1:{port}/ws"
            sup.env["VIGIL_SIGNAL_URL"] = signal_url
            sup.env["VIGIL_SIGNAL_TOKEN"] = token or secrets.token_urlsafe(24)
            argv = [*py, "signal-sim", "--port", str(port), "--exchange", ",".join(venues)]
            sim = sup.spawn("signal-sim", [*argv, *opts.signal_sim_args])
            deadline = time.monotonic() + 15
            while not port_in_use(port) and sim.running and time.monotonic() < deadline:
                time.sleep(0.05)  # the ingest's first connect should find it listening
        # the ingest also carries the price stream (trailing, aged closes) and the user-data
        # stream (stops filled on the exchange), so it runs with or without a signal source
        run_ingest = opts.ingest if opts.ingest is not None else True
        if run_ingest:
            # one ingest per venue (its prices, user data and waves); the first one alone
            # reads the signal stream, whose signals name their venue
            for index, venue in enumerate(venues):
                argv = [*py, "ingest", "--exchange", venue]
                if index > 0:
                    argv.append("--no-signals")
                sup.spawn(self.process_name("ingest", venue), argv)
            self.endpoints.signal_url = signal_url

    def wait_for_worker(self, timeout: float = 60.0) -> float:
        """Round-trip a ping task through the broker; return its latency in seconds."""
        from tasks.app import create_app
        from tasks.ping import ping_result

        celery = create_app(self.settings.model_copy(update={"redis_url": self._redis_url()}))
        started = time.monotonic()
        deadline = started + timeout
        while True:
            sup = self.supervisor
            dead = sup.first_dead() if sup else None
            if dead is not None:
                raise StartupError(f"{dead.name} exited at start; see {dead.log_path}")
            try:
                with ping_result(celery) as result:
                    result.get(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                return time.monotonic() - started
            except Exception as exc:  # noqa: BLE001 - celery raises TimeoutError and others
                if time.monotonic() >= deadline:
                    raise StartupError(f"no worker answered within {timeout}s: {exc}") from None

    def watch(self, say: Callable[[str], None]) -> None:
        """Keep every process alive until Ctrl-C / SIGTERM (``shell/runtime/watch.py``)."""
        assert self.supervisor is not None and self.endpoints is not None
        watcher = StackWatch(self.supervisor, self.endpoints.database_url, say)
        try:
            watcher.run()
        finally:
            watcher.close()

    def _redis_url(self) -> str:
        assert self.endpoints is not None
        return self.endpoints.redis_url

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        self.stop_storage()
        if self._home_lock is not None:
            forget_pids(self.home)
            self._home_lock.release()
            self._home_lock = None


def _spawn_listening(
    sup: Supervisor, name: str, argv: list[str], port: int, what: str, setting: str
) -> str:
    """Spawn a child that serves HTTP on ``port``; its local URL.

    A port already taken stops the start with one line naming the setting that moves it,
    rather than a child that dies at bind time and is restarted in a loop.
    """
    if port_in_use(port):
        raise StartupError(f"port {port} for {what} is in use; set {setting}")
    sup.spawn(name, argv)
    return f"http://127.0.0.1:{port}"
