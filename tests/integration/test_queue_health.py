"""The ``queues`` component of /health: a worker alive but taking no task is noticed.

Real parts: an embedded Redis and PostgreSQL, a real ``vigil worker``. The worker is made to
stop consuming while it lives (Celery's ``cancel_consumer``: its control channel still
answers pings), which is what a consumer stalled after a broker loss looks like from outside.
``workers`` stays ok (the ping is answered); ``queues`` fails once a message has waited past
the bound, and is ok again once the worker consumes.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest

from core import task_names as names
from core.clock import SYSTEM_CLOCK, ManualClock
from core.config import get_settings
from core.queues import QUEUES
from core.services.deps import get_deps
from core.services.health import FAIL, OK, HealthChecker
from core.services.queue_health import queues_detail, stale_queues
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration

NODE = "queue-health@test"
STALE_AFTER = 3.0  # seconds; the deployment default is 120
WAIT_SECONDS = 90  # only to fail instead of hanging on a loaded machine


@pytest.fixture
def celery(redis_url):
    from tasks.app import create_app

    get_settings.cache_clear()
    app = create_app(get_settings())
    yield app
    app.close()


def test_stale_queues_are_those_past_the_bound():
    assert stale_queues({"stops": 121.0, "orders": 5.0}, 120) == {"stops": 121.0}
    assert stale_queues({}, 120) == {}


def test_a_queue_whose_oldest_message_waits_past_the_bound_fails(redis_client, celery):
    clock = ManualClock(datetime.now(UTC))
    assert queues_detail(redis_client, clock, QUEUES, 120)[0]  # empty: ok

    celery.send_task(names.TRAILING_SWEEP)  # no worker consumes: it waits in `stops`
    clock.advance(seconds=60)
    healthy, detail = queues_detail(redis_client, clock, QUEUES, 120)
    assert healthy and 55 <= detail["oldest_age_seconds"] <= 90

    clock.advance(seconds=90)
    healthy, detail = queues_detail(redis_client, clock, QUEUES, 120)
    assert not healthy
    assert list(detail["stale"]) == ["stops"] and "stops" in detail["error"]

    redis_client.delete("stops")  # taken
    assert queues_detail(redis_client, clock, QUEUES, 120)[0]


@pytest.fixture
def worker(clean_db, redis_url, tmp_path):
    with Processes(dict(os.environ, VIGIL_HOME=str(tmp_path))) as processes:
        yield processes.worker("--pool", "solo", "--name", NODE.split("@")[0])


def _until(what: str, done):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result := done()):
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_SECONDS} s"
        time.sleep(0.2)
    return result


def test_a_worker_alive_but_not_consuming_fails_queues_while_workers_stays_ok(
    worker, celery, redis_client
):
    def ping(timeout: float) -> list[str]:
        return [name for reply in celery.control.ping(timeout=timeout) or [] for name in reply]

    settings = get_settings().model_copy(update={"health_queue_stale_seconds": STALE_AFTER})
    checker = HealthChecker(settings, SYSTEM_CLOCK, get_deps, redis_client, None, ping)  # type: ignore[arg-type]
    node = _until("the worker answers", lambda: next(iter(ping(1.0)), None))
    _until("its start-up tasks are taken", lambda: checker.queues().status == OK)
    for queue in QUEUES:
        celery.control.cancel_consumer(queue, destination=[node], reply=True)

    sent = time.monotonic()
    celery.send_task(names.TRAILING_SWEEP)

    def stops_stale():  # noqa: ANN202 - another queue may turn stale first (start-up tasks)
        component = checker.queues()
        return component.status == FAIL and "stops" in component.detail["stale"] and component

    failed = _until("queues fails naming stops", stops_stale)
    noticed = time.monotonic() - sent
    print(f"queues failed {noticed:.1f} s after the send (bound {STALE_AFTER} s): {failed.detail}")
    assert checker.workers().status == OK  # the ping alone would never have paged

    for queue in QUEUES:
        celery.control.add_consumer(queue, destination=[node], reply=True)
    _until("queues is ok again", lambda: checker.queues().status == OK)
