"""Worker exits per broker loss: Redis restarted N times under one worker.

Real processes: the project's Celery worker (tests/integration/broker_loss_worker.py, prefork,
2 slots) and an embedded Redis with its append-only file. Each loss: the worker runs one
``acks_late`` task held open (an unacknowledged message, a free slot), Redis stops, stays down
2 s and starts again; three tasks are sent, then the held one is released. A worker that exits
(or logs Celery's "Unrecoverable error") is let finish its running task, counted and started
again, as `vigil up` would.
Prints the losses, the exits, the worker processes used, the tasks sent and run, and what is
left queued or unacknowledged in Redis (unacknowledged: waiting for the visibility timeout).

    python -m bench.bench_broker_loss --losses 5
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bench.common import machine
from core.config import get_settings
from core.endpoints import embedded_redis_url
from shell.runtime.embedded import EmbeddedRedis, free_port
from tasks.app import create_app
from tests.integration.test_broker_loss import QUEUE, TASK_NAME, Worker

OUTAGE_SECONDS = 2
EXIT_WATCH_SECONDS = 15


def _ending(worker: Worker) -> bool:
    return worker.proc.poll() is not None or "Unrecoverable error" in worker.log()


def _watch_for_exit(worker: Worker) -> bool:
    deadline = time.monotonic() + EXIT_WATCH_SECONDS
    while time.monotonic() < deadline:
        if _ending(worker):
            return True
        time.sleep(0.2)
    return False


def run(losses: int, base: Path) -> dict[str, int]:
    broker = EmbeddedRedis(base / "redis", free_port(), persist=True)
    broker.start()
    url = embedded_redis_url(broker.port)
    app = create_app(get_settings().model_copy(update={"redis_url": url}))
    sent: set[str] = set()
    workers = [Worker(_fresh_dir(base, 0), url)]
    try:
        for loss in range(losses):
            exited = _one_loss(app, broker, workers[-1], f"held{loss}", sent)
            if exited:
                workers.append(Worker(_fresh_dir(base, loss + 1), url))
            _send_and_wait(app, workers[-1], {f"after{loss}_{i}" for i in range(3)}, sent)
            if not exited:
                workers[-1].release_held()
                workers[-1].wait_for("the held task finishes", _has(f"held{loss}"))
        ran = set().union(*(w.tokens() for w in workers))
        client = redis.Redis(port=broker.port)
        _settle(client)
        return {
            "broker losses": losses,
            "worker exits": len(workers) - 1,
            "worker processes": len(workers),
            "tasks sent": len(sent),
            "tasks run": len(sent & ran),
            "left queued": int(client.llen(QUEUE)),
            "left unacknowledged": int(client.hlen("unacked")),
        }
    finally:
        workers[-1].stop()
        app.close()
        broker.stop()


def _one_loss(app, broker: EmbeddedRedis, worker: Worker, held: str, sent: set[str]) -> bool:  # noqa: ANN001
    """Restart Redis while ``worker`` runs ``held``; True when the worker ended over it."""
    worker.records.with_suffix(".release").unlink(missing_ok=True)
    app.send_task(TASK_NAME, args=[held], queue=QUEUE)
    sent.add(held)
    worker.wait_for("the held task starts", _has(held), ".started")
    broker.stop()
    time.sleep(OUTAGE_SECONDS)
    broker.start()
    if not _watch_for_exit(worker):
        return False
    worker.release_held()  # an ending worker finishes its running task first (warm shutdown)
    try:
        worker.proc.wait(EXIT_WATCH_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    worker.stop()
    return True


def _send_and_wait(app, worker: Worker, tokens: set[str], sent: set[str]) -> None:  # noqa: ANN001
    for token in sorted(tokens):
        app.send_task(TASK_NAME, args=[token], queue=QUEUE)
    sent |= tokens
    worker.wait_for("tasks sent after the restart run", lambda runs: tokens <= runs)


def _settle(client: redis.Redis, seconds: float = 10) -> None:
    """Give the last acknowledgement a moment to reach Redis before counting what is left."""
    deadline = time.monotonic() + seconds
    while client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.2)


def _has(token: str):  # noqa: ANN202
    return lambda tokens: token in tokens


def _fresh_dir(base: Path, index: int) -> Path:
    path = base / f"worker{index}"
    path.mkdir()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as base:
        figures = run(args.losses, Path(base))
    for name, value in figures.items():
        print(f"{name:>20}: {value}")


if __name__ == "__main__":
    main()
