"""Redis restarts under a worker whose two pool slots are busy: the trial, shared by
tests/integration/test_busy_broker_loss.py and bench/bench_busy_broker_loss.py.

Real processes: the project's Celery worker (broker_loss_worker.py: the `vigil worker` app and
options, prefork, 2 slots, one task of its own that can be held open) and an embedded Redis
with its append-only file, killed with SIGKILL and started again on the same port. Each trial:
two held ``acks_late`` tasks start (both slots busy, two unacknowledged messages); Redis is
killed and started again, the held tasks released at the moment the variant names; then two
probe tasks are sent, and the trial passes when both run in time. After each trial the
worker's TCP connections to Redis are counted (psutil, by process and socket state).

Variants: ``busy`` (released 1 s after the restart), ``one_finishes`` (one just before the
kill, the other after the restart), ``finish_in_outage`` (both while Redis is down),
``at_restart`` (both the instant Redis is back), ``backlog`` (four more tasks queued while
both slots are busy), ``split`` (one released while Redis is down, the other after),
``double_restart`` (Redis killed again while the worker reconnects), ``frees_into_backlog``
(tasks queued behind both busy slots, one slot freed 0-0.3 s before the kill: the worker is
taking the backlog when Redis dies).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from core.endpoints import embedded_redis_url
from shell.runtime.embedded import EmbeddedRedis
from tests.integration.test_broker_loss import QUEUE, TASK_NAME, Worker

VARIANTS = ("busy", "one_finishes", "finish_in_outage", "at_restart")
MORE_VARIANTS = ("backlog", "split", "double_restart", "frees_into_backlog")
ALL_VARIANTS = VARIANTS + MORE_VARIANTS
#: the queues `vigil worker` consumes by default, beside the test task's own
ENGINE_QUEUES = "signals,orders,stops,maintenance"


def worker_connections(worker: Worker, port: int) -> Counter[str]:
    """The worker's (and its pool children's) TCP connections to Redis, by process and state."""
    states: Counter[str] = Counter()
    try:
        main = psutil.Process(worker.proc.pid)
        procs = [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return states
    for proc in procs:
        role = "main" if proc.pid == main.pid else "child"
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == port:
                    states[f"{role} {conn.status}"] += 1
        except psutil.NoSuchProcess:
            continue
    return states


def server_clients(port: int) -> int:
    """Clients Redis itself counts, less the one asking."""
    client = redis.Redis(port=port)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


@dataclass
class Trial:
    variant: str
    outage: float
    consumed_after: float | None  # seconds from Redis back to both probes run; None: stall
    connections: dict[str, int]
    server_clients: int
    census: dict[str, object] | None = None


@dataclass
class Run:
    broker: EmbeddedRedis
    base: Path
    app: object
    probe_seconds: float
    queues: str
    census: bool
    worker: Worker = field(init=False)
    workers_started: int = 0
    trials: list[Trial] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.worker = self._fresh_worker()

    def _fresh_worker(self) -> Worker:
        """A worker started and seen consuming (its first task run)."""
        path = self.base / f"worker{self.workers_started}"
        path.mkdir()
        self.workers_started += 1
        worker = Worker(path, embedded_redis_url(self.broker.port), self.queues)
        self._send("warmup")
        _wait(lambda: "warmup" in worker.tokens(), 120, "the worker consumes")
        return worker

    def _send(self, token: str) -> None:
        # as the engine's own senders (beat, the ingest, workers) send: no result kept. A task
        # sent by hand keeps its result and stores STARTED first, which a Redis outage fails
        # before the task's body runs (see docs/reliability.md)
        self.app.send_task(TASK_NAME, args=[token], queue=QUEUE, ignore_result=True)  # type: ignore[attr-defined]

    def _release(self, token: str) -> None:
        self.worker.records.with_suffix(f".release-{token}").touch()

    def _started(self) -> set[str]:
        return self.worker.tokens(".started")

    def _ran(self) -> set[str]:
        return self.worker.tokens()

    def trial(self, index: int, variant: str, outage: float) -> Trial:
        held = [f"held{index}a", f"held{index}b"]
        backlog = variant in ("backlog", "frees_into_backlog")
        fills = {f"fill{index}_{n}" for n in range(4)} if backlog else set()
        for token in held:
            self._send(token)
        _wait(lambda: set(held) <= self._started(), 60, "both slots busy")
        if variant == "one_finishes":
            self._release(held[0])
            time.sleep(random.uniform(0.0, 0.3))
        if backlog:  # tasks waiting in Redis while both slots are busy
            for token in sorted(fills):
                self._send(token)
            time.sleep(0.5)
        if variant == "frees_into_backlog":  # killed while the freed slot takes the backlog
            self._release(held[0])
            time.sleep(random.uniform(0.0, 0.3))
        self._outage(variant, outage, held)
        self.broker.start()
        back = time.monotonic()
        if variant == "busy":
            time.sleep(1.0)
        for token in held:
            self._release(token)
        probes = {f"probe{index}a", f"probe{index}b"}
        for token in sorted(probes):
            self._send(token)
        expected = probes | fills
        consumed = _poll(lambda: expected <= self._ran(), self.probe_seconds)
        result = Trial(
            variant,
            outage,
            round(time.monotonic() - back, 2) if consumed else None,
            dict(worker_connections(self.worker, self.broker.port)),
            server_clients(self.broker.port),
            self._census() if self.census else None,
        )
        self.trials.append(result)
        if not consumed:
            self._keep_stalled(index)
        return result

    def _outage(self, variant: str, outage: float, held: list[str]) -> None:
        """Kill Redis and keep it down for ``outage`` s, releasing as ``variant`` says."""
        self.broker.kill()
        if variant == "split":  # one finishes while Redis is down, the other after
            time.sleep(outage / 2)
            self._release(held[0])
            time.sleep(outage / 2)
        elif variant == "double_restart":  # a second loss while the worker reconnects
            time.sleep(outage)
            self.broker.start()
            time.sleep(random.uniform(0.2, 2.5))
            self.broker.kill()
            time.sleep(outage)
        elif variant == "finish_in_outage":
            time.sleep(outage / 3)
            for token in held:
                self._release(token)
            time.sleep(outage * 2 / 3)
        else:
            time.sleep(outage)

    def _census(self) -> dict[str, object] | None:
        """The worker's own account of its Redis sockets (tests/integration/redis_census.py)."""
        answer = self.worker.records.with_suffix(".census")
        answer.unlink(missing_ok=True)
        answer.with_suffix(".census.request").touch()
        if not _poll(answer.exists, 10):
            return None
        time.sleep(0.2)
        return json.loads(answer.read_text())

    def _keep_stalled(self, index: int) -> None:
        """Dump the stalled worker's threads into its log, keep the log, start a fresh one."""
        if self.worker.proc.poll() is None:
            self.worker.proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
        shutil.copy(self.worker.log_path, self.base / f"stall{index}.log")
        self.worker.stop()
        self.worker = self._fresh_worker()

    def stop(self) -> None:
        self.worker.stop()


def _poll(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait(done: Callable[[], bool], seconds: float, what: str) -> None:
    if not _poll(done, seconds):
        raise TimeoutError(f"{what}: not within {seconds} s")
