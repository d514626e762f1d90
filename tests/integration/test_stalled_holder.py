"""/health's ``queues`` names a message held by a stalled worker while others consume.

Real parts: an embedded Redis and PostgreSQL, real ``vigil worker`` processes (prefork, one
slot each), the engine's own heartbeat task. A held task is a heartbeat whose ``heartbeats``
row this test keeps locked (``SELECT ... FOR UPDATE`` in an open transaction): it runs in
its worker's pool process, waiting on the lock, and its message stays unacknowledged in
Redis, as any running ``acks_late`` task's does.

* One worker receives the held task and its whole process group is SIGSTOPped; a second
  worker on the same queues keeps consuming (probes sent meanwhile run), so no queue has a
  message waiting. ``queues`` must fail naming the held task and the stopped worker, the
  watchdog must page it (``component_down`` ``queues``), and ``queues`` be ok again after
  SIGCONT.
* A legitimate long task (the same held task on a worker left running) held for several
  times the bound never fails ``queues``, with the prefork pool and with the solo pool
  (whose beat comes from a thread: the task runs inside its main loop).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import Connection, create_engine, select, text

from core import task_names as names
from core.clock import SYSTEM_CLOCK
from core.config import get_settings
from core.db.models import Event
from core.db.session import new_session
from core.events import EventType
from core.queues import UNACKED_INDEX_KEY, UNACKED_KEY, WORKER_LOOPS_KEY
from core.services.deps import get_deps
from core.services.health import FAIL, OK, Component, HealthChecker, HealthReport
from core.services.paging import Watchdog
from tests.fixtures.processes import Processes, signal_group

pytestmark = pytest.mark.integration

# VIGIL_HEALTH_HOLDER_STALL_SECONDS for the workers and the check (the deployment's is 30;
# VIGIL_TEST_HOLDER_STALL_SECONDS=30 measures the detection with it)
BOUND = float(os.environ.get("VIGIL_TEST_HOLDER_STALL_SECONDS", "3"))
WAIT_SECONDS = 120 + 2 * BOUND  # only to fail instead of hanging on a loaded machine
T = TypeVar("T")


def _until(what: str, done: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result := done()):
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_SECONDS} s"
        time.sleep(0.1)
    return result


@pytest.fixture
def celery(redis_url):  # noqa: ANN001, ANN201
    from tasks.app import create_app

    get_settings.cache_clear()
    app = create_app(get_settings())
    yield app
    app.close()


@pytest.fixture
def processes(clean_db, redis_client, tmp_path) -> Iterator[Processes]:  # noqa: ANN001
    env = dict(os.environ, VIGIL_HOME=str(tmp_path), VIGIL_HEALTH_HOLDER_STALL_SECONDS=str(BOUND))
    with Processes(env, stop_signal=signal.SIGKILL, log_dir=tmp_path) as started:
        yield started
        for proc in started.started:  # a stopped group cannot take its stop signal
            signal_group(proc, signal.SIGCONT)


@pytest.fixture
def checker(redis_client) -> HealthChecker:  # noqa: ANN001
    # the waiting-age bound stays the default (120 s): only a held message can fail here
    settings = get_settings().model_copy(update={"health_holder_stall_seconds": BOUND})
    return HealthChecker(settings, SYSTEM_CLOCK, get_deps, redis_client, None)  # type: ignore[arg-type]


class RowLock:
    """A ``heartbeats`` row kept locked: the heartbeat task for it waits until released."""

    def __init__(self, database_url: str, component: str) -> None:
        self.engine = create_engine(database_url)
        self.component = component
        with self.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO heartbeats (component, seen_at) VALUES (:c, now())"),
                {"c": component},
            )
        self.holder: Connection | None = self.engine.connect()
        self.holder.begin()
        self.holder.execute(
            text("SELECT 1 FROM heartbeats WHERE component = :c FOR UPDATE"), {"c": component}
        )

    def task_waits(self) -> bool:
        with self.engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%heartbeats%'"
                )
            ).scalar_one()
        return waiting >= 1

    def release(self) -> None:
        if self.holder is not None:
            self.holder.commit()
            self.holder.close()
            self.holder = None

    def close(self) -> None:
        self.release()
        self.engine.dispose()


@pytest.fixture
def row_lock(clean_db) -> Iterator[RowLock]:  # noqa: ANN001
    lock = RowLock(clean_db, "held")
    yield lock
    lock.close()


def _beating(redis_client, name: str) -> str | None:  # noqa: ANN001
    """The full node name of worker ``name`` once its main loop has beaten."""
    for worker in redis_client.hkeys(WORKER_LOOPS_KEY):
        if worker.decode().startswith(f"{name}@"):
            return str(worker.decode())
    return None


def _held_task_ids(redis_client) -> set[str]:  # noqa: ANN001
    ids = set()
    for raw in redis_client.hvals(UNACKED_KEY):
        ids.add(json.loads(raw)[0]["headers"]["id"])
    return ids


def _tag_of(redis_client, task_id: str) -> str:  # noqa: ANN001
    """The delivery tag of the received, unacknowledged message of task ``task_id``."""
    for tag, raw in redis_client.hgetall(UNACKED_KEY).items():
        if json.loads(raw)[0]["headers"]["id"] == task_id:
            return str(tag.decode())
    raise AssertionError(f"task {task_id} is not held")


def _listed(redis_client, node: str) -> list[str]:  # noqa: ANN001
    raw = redis_client.hget(WORKER_LOOPS_KEY, node)
    return list(json.loads(raw)["tags"]) if raw else []


def _ran(database_url: str, prefix: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM heartbeats WHERE component LIKE :p"),
                    {"p": f"{prefix}%"},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _start_held_task(celery, redis_client, row_lock: RowLock) -> str:  # noqa: ANN001
    task_id = celery.send_task(names.HEARTBEAT, kwargs={"component": "held"}, ignore_result=True).id
    _until("the held task runs in a pool process", row_lock.task_waits)
    assert task_id in _held_task_ids(redis_client)  # received, not acknowledged
    return str(task_id)


def test_a_stopped_worker_holding_a_task_fails_queues_while_another_consumes(
    processes, celery, redis_client, checker, row_lock, clean_db
):
    stalled = processes.worker("--concurrency", "1", "--name", "stalled")
    stalled_node = _until("the first worker beats", lambda: _beating(redis_client, "stalled"))
    task_id = _start_held_task(celery, redis_client, row_lock)
    tag = _tag_of(redis_client, task_id)
    # stopped once its loop has said it holds the task, so that the failure can name it
    _until("the worker's beat lists the task", lambda: tag in _listed(redis_client, stalled_node))
    assert checker.queues().status == OK

    signal_group(stalled, signal.SIGSTOP)
    stopped_at = time.monotonic()
    processes.worker("--concurrency", "1", "--name", "consuming")
    _until("the second worker beats", lambda: _beating(redis_client, "consuming"))

    sent = 0

    def held_named():  # noqa: ANN202 - probes keep flowing: the queues move all along
        nonlocal sent
        celery.send_task(names.HEARTBEAT, kwargs={"component": f"probe{sent}"}, ignore_result=True)
        sent += 1
        component = checker.queues()
        held = component.detail.get("held_by_stalled_worker") or []
        return component.status == FAIL and any(h["task_id"] == task_id for h in held) and component

    failed = _until("queues names the held task", held_named)
    noticed = time.monotonic() - stopped_at
    [hold] = [h for h in failed.detail["held_by_stalled_worker"] if h["task_id"] == task_id]
    print(f"\nqueues failed {noticed:.1f} s after the SIGSTOP (bound {BOUND} s): {failed.detail}")
    assert hold["task"] == names.HEARTBEAT and hold["queue"] == "maintenance"
    assert hold["worker"] == stalled_node and hold["held_seconds"] > BOUND
    assert "stale" not in failed.detail  # no message waits: the queues were consumed
    _until("the other worker consumed the probes", lambda: _ran(clean_db, "probe") >= 1)
    _assert_it_pages(checker, failed, task_id)

    signal_group(stalled, signal.SIGCONT)
    continued_at = time.monotonic()
    _until("queues is ok again after SIGCONT", lambda: checker.queues().status == OK)
    print(f"ok again {time.monotonic() - continued_at:.1f} s after the SIGCONT")
    row_lock.release()
    _until("the held task ran", lambda: task_id not in _held_task_ids(redis_client))


def _assert_it_pages(checker: HealthChecker, failed: Component, task_id: str) -> None:
    """The watchdog (the API's and beat's) pages the failing component, detail and all."""
    settings = checker.settings.model_copy(update={"page_confirm_seconds": 0})
    watchdog = Watchdog(settings, SYSTEM_CLOCK, checker, host="api")
    watchdog.act(HealthReport(SYSTEM_CLOCK.now(), {"queues": failed}))
    with new_session() as session:
        [page] = session.scalars(
            select(Event).where(Event.type == EventType.COMPONENT_DOWN.value)
        ).all()
    assert page.severity == "critical" and page.data["component"] == "queues"
    [named] = page.data["detail"]["held_by_stalled_worker"]
    assert named["task_id"] == task_id


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_long_task_of_a_running_worker_never_fails_queues(
    pool, processes, celery, redis_client, checker, row_lock
):
    processes.worker("--concurrency", "1", "--pool", pool, "--name", f"long{pool}")
    _until("the worker beats", lambda: _beating(redis_client, f"long{pool}"))
    task_id = _start_held_task(celery, redis_client, row_lock)
    received_at = redis_client.zscore(UNACKED_INDEX_KEY, _tag_of(redis_client, task_id))

    checks = 0
    while time.time() - received_at < 4 * BOUND:  # held four times the bound, and more
        component = checker.queues()
        assert component.status == OK, component.detail
        checks += 1
        time.sleep(0.2)
    assert checks >= 10 and task_id in _held_task_ids(redis_client)  # still running
    row_lock.release()
    _until("the long task ended", lambda: task_id not in _held_task_ids(redis_client))


def test_a_warm_shutdown_waiting_for_a_long_task_never_fails_queues(
    processes, celery, redis_client, checker, row_lock
):
    """SIGTERM: the worker stops its loop and waits for the running task (compose gives it
    200 s); that task is held by a live process all along, not by a stalled one."""
    worker = processes.worker("--concurrency", "1", "--name", "leaving")
    _until("the worker beats", lambda: _beating(redis_client, "leaving"))
    task_id = _start_held_task(celery, redis_client, row_lock)
    signal_group(worker, signal.SIGTERM)  # warm shutdown: the task is left to finish
    stopping_at = time.time()

    checks = 0
    while time.time() - stopping_at < 4 * BOUND:
        component = checker.queues()
        assert component.status == OK, component.detail
        checks += 1
        time.sleep(0.2)
    assert checks >= 10 and worker.poll() is None  # still waiting for its task
    assert task_id in _held_task_ids(redis_client)
    row_lock.release()
    worker.wait(WAIT_SECONDS)
    assert task_id not in _held_task_ids(redis_client)  # acknowledged on its way out


def test_a_held_countdown_task_counts_from_its_eta(celery, redis_client):
    """kombu keeps a received message as ``[message, exchange, routing key]``; a countdown
    task's ETA (Celery's ``eta`` header) is when it starts to be held for nothing."""
    from core.services.queue_health import received_messages

    task_id = celery.send_task(names.TRAILING_SWEEP, countdown=600, ignore_result=True).id
    raw = redis_client.rpop("stops")  # as a worker's BRPOP takes it
    received_at = time.time()
    redis_client.hset(UNACKED_KEY, "tag1", json.dumps([json.loads(raw), "", "stops"]))
    redis_client.zadd(UNACKED_INDEX_KEY, {"tag1": received_at})

    [held] = received_messages(redis_client, received_before=received_at + 1)
    assert (held.tag, held.queue, held.task, held.task_id) == (
        "tag1",
        "stops",
        names.TRAILING_SWEEP,
        task_id,
    )
    assert 590 <= held.held_since - received_at <= 610  # its ETA, not its receipt
