"""A worker whose two pool slots are busy when Redis is killed consumes again once Redis is
back, and Redis restarts do not pile up connections in it (real processes: the project's
Celery worker, prefork, 2 slots; an embedded Redis killed with SIGKILL and started again on
the same port and append-only file; tests/integration/busy_broker.py).

Before the teardown guard (tasks/broker_teardown.py) each restart left two more sockets open
in the worker's main process (channels of the lost connection never closed, and a pool built
on a closed channel to restore or acknowledge its messages): 2 CLOSE_WAIT after the first
restart, 121 after 60.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import get_settings
from core.endpoints import embedded_redis_url
from shell.runtime.embedded import EmbeddedRedis, free_port
from tests.integration.busy_broker import Run, Trial
from tests.integration.test_broker_loss import QUEUE, TASK_NAME, WAIT_SECONDS, Worker

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 1.0
#: restarts after the first one before the connections are counted again
MORE_RESTARTS = 4


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    from tasks.app import create_app

    broker = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    broker.start()
    settings = get_settings().model_copy(update={"redis_url": embedded_redis_url(broker.port)})
    app = create_app(settings)
    started = Run(broker, tmp_path, app, WAIT_SECONDS, QUEUE, census=False)
    yield started
    started.stop()
    app.close()
    broker.stop()


def _assert_consumed(trial: Trial, run: Run) -> None:
    assert trial.consumed_after is not None, (
        f"{trial.variant}: no task taken within {WAIT_SECONDS} s after Redis was back\n"
        f"{run.worker.log()[-4000:]}"
    )
    assert run.worker.proc.poll() is None  # the same process throughout
    assert "Unrecoverable error" not in run.worker.log()


@pytest.mark.parametrize("variants", [("busy", "finish_in_outage", "split")])
def test_a_worker_with_both_slots_busy_takes_tasks_again_after_redis_restarts(run, variants):
    for index, variant in enumerate(variants):
        trial = run.trial(index, variant, OUTAGE_SECONDS)
        print(f"{variant}: probes ran {trial.consumed_after} s after Redis was back")
        _assert_consumed(trial, run)


def _sockets(trial: Trial) -> tuple[int, int]:
    """(all the worker's sockets to Redis, those not ESTABLISHED: left from a dead server)."""
    total = sum(trial.connections.values())
    stale = sum(n for key, n in trial.connections.items() if not key.endswith(" ESTABLISHED"))
    return total, stale


def test_redis_restarts_leave_no_more_connections_in_the_worker_than_one(run):
    first = run.trial(0, "busy", OUTAGE_SECONDS)
    _assert_consumed(first, run)
    trials = [run.trial(index, "busy", OUTAGE_SECONDS) for index in range(1, 1 + MORE_RESTARTS)]
    for trial in trials:
        _assert_consumed(trial, run)
    last = trials[-1]
    (total_first, stale_first), (total_last, stale_last) = _sockets(first), _sockets(last)
    print(f"after 1 restart: {first.connections}; after {1 + MORE_RESTARTS}: {last.connections}")
    # One socket of kombu's producer pool is replaced only when next used, so it may be left
    # from the previous server or already new: counts move by one, never with the restarts
    # (before the guard: +2 for every restart, +8 here).
    assert total_last <= total_first + 1
    assert stale_last <= stale_first + 1


#: hard time limit of the hung tasks (the deployment's default is 180 s)
HARD_LIMIT = 7


@pytest.mark.parametrize("killed_after", [2.0, 5.5])  # before the soft limit; between the two
def test_two_hung_tasks_are_still_ended_by_the_hard_time_limit_across_a_redis_restart(
    tmp_path: Path, killed_after: float
):
    """Both slots held by tasks that never return: only the hard time limit frees them, and
    its timers live in the worker's event loop, which a broker loss resets. Were they lost,
    the worker would stay alive and never take a task again."""
    from tasks.app import create_app

    broker = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    broker.start()
    url = embedded_redis_url(broker.port)
    app = create_app(get_settings().model_copy(update={"redis_url": url}))
    limits = {"VIGIL_TASK_SOFT_TIME_LIMIT": "4", "VIGIL_TASK_TIME_LIMIT": str(HARD_LIMIT)}
    worker = Worker(tmp_path, url, VIGIL_BROKER_VISIBILITY_TIMEOUT="60", **limits)
    try:
        send = lambda token: app.send_task(TASK_NAME, args=[token], queue=QUEUE)  # noqa: E731
        send("warmup")
        worker.wait_for("the worker consumes", lambda runs: "warmup" in runs)
        for token in ("hangA", "hangB"):
            send(token)
        worker.wait_for("both slots hang", lambda s: {"hangA", "hangB"} <= s, ".started")
        time.sleep(killed_after)
        broker.kill()
        time.sleep(OUTAGE_SECONDS)
        broker.start()
        for token in ("probeA", "probeB"):
            send(token)
        worker.wait_for("tasks run after the hung ones", lambda runs: {"probeA", "probeB"} <= runs)
        assert worker.log().count("Hard time limit") == 2
    finally:
        worker.stop()
        app.close()
        broker.stop()


def test_a_task_waiting_for_its_countdown_runs_after_a_redis_restart_not_after_the_sweep(
    tmp_path: Path,
):
    """A message the worker holds without running it (a countdown; as well a task received in
    the instant before the loss) could not be put back while Redis was down: it waited in the
    unacked set for the visibility timeout's sweep (300 s; before the restore guard). It now
    goes back on its queue once Redis answers and runs at its time."""
    from tasks.app import create_app

    broker = EmbeddedRedis(tmp_path / "redis", free_port(), persist=True)
    broker.start()
    url = embedded_redis_url(broker.port)
    app = create_app(get_settings().model_copy(update={"redis_url": url}))
    worker = Worker(tmp_path, url)
    client = redis.Redis(port=broker.port)
    try:
        app.send_task(TASK_NAME, args=["warmup"], queue=QUEUE)
        worker.wait_for("the worker consumes", lambda runs: "warmup" in runs)
        app.send_task(TASK_NAME, args=["later"], queue=QUEUE, countdown=3)
        deadline = time.monotonic() + WAIT_SECONDS
        while not client.hlen("unacked"):  # received, held for its countdown
            assert time.monotonic() < deadline, "the countdown task was not received"
            time.sleep(0.05)
        broker.kill()
        time.sleep(OUTAGE_SECONDS)
        broker.start()
        # bounded well below the 300 s sweep: only a restore puts it back in time
        worker.wait_for("the countdown task runs", lambda runs: "later" in runs)
        assert worker.proc.poll() is None
    finally:
        client.close()
        worker.stop()
        app.close()
        broker.stop()
