"""A worker rides through a Redis restart while it holds an unacknowledged message (real
processes: the project's Celery worker, an embedded Redis stopped or killed, started again).

The loss that used to end the worker: a running ``acks_late`` task (an unacknowledged message)
and a free pool slot (a BRPOP in flight) when Redis goes away. kombu 5.7.0 then failed restoring
the message with ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and Celery
exited the worker process (tasks/broker_channel.py). Here the same process reconnects, runs the
tasks sent after Redis is back, acknowledges the one it held, and no message is left behind.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import get_settings
from core.endpoints import embedded_redis_url
from shell.runtime.embedded import EmbeddedRedis, free_port
from tasks.app import create_app
from tests.fixtures.processes import stop_process

pytestmark = pytest.mark.integration

QUEUE = "broker_loss"
TASK_NAME = "tests.broker_loss.record"
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 120  # a generous bound for a loaded machine, only to fail instead of hanging
OUTAGE_SECONDS = 2


class Worker:
    """The worker process, what it recorded and its log. Not ``Processes.worker``: that runs
    `vigil worker`, whose tasks cannot be held open on purpose; this is the same app with one
    task of its own (broker_loss_worker.py)."""

    def __init__(
        self, tmp_path: Path, redis_url: str, queues: str = QUEUE, **settings: str
    ) -> None:
        self.records = tmp_path / "runs.txt"
        self.log_path = tmp_path / "worker.log"
        env = dict(
            os.environ,
            VIGIL_HOME=str(tmp_path),
            VIGIL_REDIS_URL=redis_url,
            BROKER_LOSS_RECORDS=str(self.records),
            **settings,
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.broker_loss_worker", queues, "bl1"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tokens(self, suffix: str = ".txt") -> set[str]:
        path = self.records.with_suffix(suffix)
        return set(path.read_text().split()) if path.exists() else set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, done, suffix: str = ".txt") -> None:  # noqa: ANN001
        deadline = time.monotonic() + WAIT_SECONDS
        while not done(self.tokens(suffix)):
            ended = self.proc.poll() is not None or "Unrecoverable error" in self.log()
            assert not ended, f"the worker is ending ({what}):\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"{what}: not within {WAIT_SECONDS} s"
            time.sleep(0.1)

    def release_held(self) -> None:
        self.records.with_suffix(".release").touch()

    def stop(self) -> None:
        self.release_held()
        stop_process(self.proc)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (restarting the session's would disturb other tests), with
    its append-only file, as `vigil up` runs it: what it held survives the restart."""
    server = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(tmp_path: Path, broker: EmbeddedRedis) -> Iterator[Worker]:
    started = Worker(tmp_path, embedded_redis_url(broker.port))
    yield started
    started.stop()


@pytest.fixture
def producer(broker: EmbeddedRedis):  # noqa: ANN201
    settings = get_settings().model_copy(update={"redis_url": embedded_redis_url(broker.port)})
    app = create_app(settings)
    yield app
    app.close()


@pytest.mark.parametrize("ending", ["stop", "kill"])  # SIGTERM, or SIGKILL as a crash
def test_the_worker_survives_a_redis_restart_while_holding_an_unacked_message(
    broker, worker, producer, ending
):
    def send(token: str) -> None:
        producer.send_task(TASK_NAME, args=[token], queue=QUEUE)

    send("before")
    worker.wait_for("the worker consumes", lambda runs: "before" in runs)
    send("held")  # runs until released: an unacknowledged message, and a free pool slot
    worker.wait_for("the held task starts", lambda started: "held" in started, ".started")

    getattr(broker, ending)()
    time.sleep(OUTAGE_SECONDS)
    broker.start()

    after = {f"after{i}" for i in range(3)}
    for token in sorted(after):
        send(token)
    worker.wait_for("tasks sent after the restart run", lambda runs: after <= runs)
    worker.release_held()
    worker.wait_for("the held task finishes", lambda runs: "held" in runs)

    assert worker.proc.poll() is None  # the same process throughout, never restarted
    log = worker.log()
    assert "Connection to broker lost" in log  # the loss was seen, not slept through
    assert "Unrecoverable error" not in log
    client = redis.Redis(port=broker.port)
    try:
        _wait_until_settled(client)
    finally:
        client.close()


def _wait_until_settled(client: redis.Redis) -> None:
    """Nothing queued and nothing unacknowledged: the held message was acknowledged after
    the reconnect, none is waiting for the visibility timeout to run it again."""
    deadline = time.monotonic() + WAIT_SECONDS
    while client.llen(QUEUE) or client.hlen("unacked"):
        assert time.monotonic() < deadline, (
            f"queued {client.llen(QUEUE)}, unacked {client.hlen('unacked')}"
        )
        time.sleep(0.1)
