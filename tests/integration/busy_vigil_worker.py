"""The busy-worker trial (busy_broker.py) with `vigil worker` itself and one of its own tasks.

`vigil worker --concurrency 2` runs beat's heartbeat task (``vigil.maintenance.heartbeat``,
an upsert of one ``heartbeats`` row in PostgreSQL). A held task is a heartbeat whose row this
process keeps locked (``SELECT ... FOR UPDATE`` in an open transaction): the task waits on the
lock in its pool process, an unacknowledged message, and is released by committing. A probe
is a heartbeat for a fresh row. Nothing here is a test double: the real command, the real
task, the real database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from sqlalchemy import Connection, Engine, create_engine, text

from core import task_names as names
from core.endpoints import embedded_redis_url
from tests.fixtures.processes import start_vigil, stop_process
from tests.integration.busy_broker import Run, _wait

OLD = "2000-01-01T00:00:00+00:00"  # a held row's time until its task has run


class VigilWorker:
    """``vigil worker --concurrency 2`` (its default queues), its log, stopped with its group."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.log_path = path / "worker.log"
        self.proc: Popen[bytes] = start_vigil(
            ["worker", "--concurrency", "2", "--name", f"busy{path.name}"], env, self.log_path
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class VigilRun(Run):
    database_url: str = ""
    engine: Engine = field(init=False)
    holders: dict[str, Connection] = field(default_factory=dict)
    started_at: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = create_engine(self.database_url, pool_size=8)
        super().__post_init__()

    def _fresh_worker(self) -> VigilWorker:  # type: ignore[override]
        path = self.base / f"worker{self.workers_started}"
        path.mkdir()
        self.workers_started += 1
        env = dict(
            os.environ,
            VIGIL_HOME=str(path),
            VIGIL_DATABASE_URL=self.database_url,
            VIGIL_REDIS_URL=embedded_redis_url(self.broker.port),
        )
        worker = VigilWorker(path, env)
        self._send("warmup")
        _wait(lambda: "warmup" in self._ran(), 120, "the worker consumes")
        return worker

    def _send(self, token: str) -> None:
        if token.startswith("held"):
            self._hold(token)
        self.app.send_task(  # type: ignore[attr-defined]
            names.HEARTBEAT, kwargs={"component": token}, ignore_result=True
        )

    def _hold(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO heartbeats (component, seen_at) VALUES (:c, :t)"),
                {"c": token, "t": OLD},
            )
        holder = self.engine.connect()
        holder.begin()
        holder.execute(
            text("SELECT 1 FROM heartbeats WHERE component = :c FOR UPDATE"), {"c": token}
        )
        self.holders[token] = holder

    def _release(self, token: str) -> None:
        holder = self.holders.pop(token, None)
        if holder is not None:
            holder.commit()
            holder.close()

    def _started(self) -> set[str]:
        """The held tokens, once as many backends wait on a row lock as tokens are held."""
        with self.engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%heartbeats%'"
                )
            ).scalar_one()
        return set(self.holders) if waiting >= len(self.holders) else set()

    def _ran(self) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT component FROM heartbeats WHERE seen_at > :t"), {"t": OLD}
            )
            return {row[0] for row in rows}

    def stop(self) -> None:
        for token in list(self.holders):
            self._release(token)
        super().stop()
        self.engine.dispose()
