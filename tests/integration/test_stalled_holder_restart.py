"""A Redis restart under a worker running a long task does not make it look stalled.

While Redis is down no worker can beat, and each reconnects on its own backoff (Celery's
2, 4, 6... s between tries): the task's message, held from before the restart, is given the
bound plus kombu's longest reconnect wait from Redis's start for its worker to beat again
(core/domain/held_messages.py). Real parts: a Redis of this test's own with its append-only
file (restarting the shared one would disturb other tests), killed and started again on the
same port; a real ``vigil worker`` (prefork, one slot) running the engine's heartbeat task
held on a row lock (tests/integration/test_stalled_holder.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.clock import SYSTEM_CLOCK
from core.config import get_settings
from core.domain.held_messages import BROKER_RECONNECT_SECONDS
from core.endpoints import embedded_redis_url
from core.services.deps import get_deps
from core.services.health import OK, HealthChecker
from shell.runtime.embedded import EmbeddedRedis, free_port
from tests.fixtures.processes import Processes
from tests.integration.test_stalled_holder import (
    BOUND,
    RowLock,
    _beating,
    _held_task_ids,
    _listed,
    _start_held_task,
    _tag_of,
    _until,
)

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 5.0  # longer than the bound: the worker's beat is silent past it


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker_client(broker: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(embedded_redis_url(broker.port))
    yield client
    client.close()


@pytest.fixture
def producer(broker: EmbeddedRedis):  # noqa: ANN201
    from tasks.app import create_app

    settings = get_settings().model_copy(update={"redis_url": embedded_redis_url(broker.port)})
    app = create_app(settings)
    yield app
    app.close()


@pytest.fixture
def worker(clean_db, broker: EmbeddedRedis, tmp_path: Path) -> Iterator[Processes]:  # noqa: ANN001
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_REDIS_URL=embedded_redis_url(broker.port),
        VIGIL_HEALTH_HOLDER_STALL_SECONDS=str(BOUND),
    )
    with Processes(env, stop_signal=signal.SIGKILL, log_dir=tmp_path) as started:
        started.worker("--concurrency", "1", "--name", "restarted")
        yield started


@pytest.fixture
def row_lock(clean_db) -> Iterator[RowLock]:  # noqa: ANN001
    lock = RowLock(clean_db, "held")
    yield lock
    lock.close()


def test_a_long_task_across_a_redis_restart_is_not_called_stalled(
    broker, broker_client, producer, worker, row_lock
):
    node = _until("the worker beats", lambda: _beating(broker_client, "restarted"))
    task_id = _start_held_task(producer, broker_client, row_lock)
    tag = _tag_of(broker_client, task_id)
    _until("the worker's beat lists the task", lambda: tag in _listed(broker_client, node))
    time.sleep(1.5)  # past Redis's once-a-second append-only fsync: the hold survives

    broker.kill()
    time.sleep(OUTAGE_SECONDS)
    broker.start()
    back = time.monotonic()
    settings = get_settings().model_copy(update={"health_holder_stall_seconds": BOUND})
    checker = HealthChecker(settings, SYSTEM_CLOCK, get_deps, broker_client, None)  # type: ignore[arg-type]

    checks = 0
    while time.monotonic() - back < BOUND + BROKER_RECONNECT_SECONDS + 3:  # past the grace
        component = checker.queues()
        assert component.status == OK, component.detail
        checks += 1
        time.sleep(0.2)
    assert checks >= 10 and task_id in _held_task_ids(broker_client)  # held all along
    assert tag in _listed(broker_client, node)  # its worker is back and claims it
    row_lock.release()
    _until("the task ended", lambda: task_id not in _held_task_ids(broker_client))
