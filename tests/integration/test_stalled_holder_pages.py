"""A stalled worker holding a task pages, through `vigil api`'s own watchdog.

Real processes: `vigil api` (its watchdog evaluates /health on a cadence and pages a
component failing past the confirmation time through the webhook), two `vigil worker`s on the
same queues, the paper exchange, the embedded storage. One worker runs the engine's heartbeat
task held on a row lock (tests/integration/test_stalled_holder.py) and is SIGSTOPped; the other
takes the probes sent all along. The webhook must receive ``component_down`` ``queues`` naming
the held task. Short thresholds here; ``VIGIL_TEST_PAGING_DEFAULTS=1`` runs it with the
deployment's defaults (a 30 s bound, 20 s confirmation, 10 s cadence) to time the page.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from core import task_names as names
from shell.runtime.embedded import free_port
from tests.fixtures.processes import Processes, signal_group
from tests.integration.test_paging import Inbox
from tests.integration.test_stalled_holder import (
    RowLock,
    _beating,
    _listed,
    _start_held_task,
    _tag_of,
    _until,
)

pytestmark = pytest.mark.integration

DEFAULTS = os.environ.get("VIGIL_TEST_PAGING_DEFAULTS") == "1"
FAST = {
    "VIGIL_HEALTH_HOLDER_STALL_SECONDS": "3",
    "VIGIL_WATCHDOG_INTERVAL": "1",
    "VIGIL_PAGE_CONFIRM_SECONDS": "2",
}


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.close()


@pytest.fixture
def stack(sim, clean_db, redis_client, tmp_path, inbox) -> Iterator[Processes]:  # noqa: ANN001
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_ALERT_WEBHOOK_URL=f"{inbox.url}/hook",
        VIGIL_API_PORT=str(free_port()),
        **({} if DEFAULTS else FAST),
    )
    env.pop("VIGIL_SIGNAL_URL", None)
    with Processes(env, stop_signal=signal.SIGKILL, log_dir=tmp_path) as started:
        started.start("api")
        yield started
        for proc in started.started:  # a stopped group cannot take its stop signal
            signal_group(proc, signal.SIGCONT)


@pytest.fixture
def row_lock(clean_db) -> Iterator[RowLock]:  # noqa: ANN001
    lock = RowLock(clean_db, "held")
    yield lock
    lock.close()


def _queues_page(inbox: Inbox) -> dict | None:
    for body in inbox.posts():
        if body.get("kind") == "component_down" and body["data"].get("component") == "queues":
            return body
    return None


@pytest.fixture
def celery_app(redis_url):  # noqa: ANN001, ANN201
    """An app on this session's Redis: the module's ``tasks.app.app`` may have been built, by
    an earlier import, before the session's address was known."""
    from core.config import get_settings
    from tasks.app import create_app

    get_settings.cache_clear()
    app = create_app(get_settings())
    yield app
    app.close()


def test_a_stopped_worker_holding_a_task_is_paged_by_the_api_watchdog(
    stack, inbox, row_lock, redis_client, celery_app
):
    celery = celery_app
    stalled = stack.worker("--concurrency", "1", "--name", "stalled")
    node = _until("the first worker beats", lambda: _beating(redis_client, "stalled"))
    task_id = _start_held_task(celery, redis_client, row_lock)
    tag = _tag_of(redis_client, task_id)
    _until("the worker's beat lists the task", lambda: tag in _listed(redis_client, node))
    assert _queues_page(inbox) is None

    signal_group(stalled, signal.SIGSTOP)
    stopped_at = time.monotonic()
    stack.worker("--concurrency", "1", "--name", "consuming")
    sent = 0

    def paged():  # noqa: ANN202 - probes keep flowing: the queues move all along
        nonlocal sent
        celery.send_task(names.HEARTBEAT, kwargs={"component": f"probe{sent}"}, ignore_result=True)
        sent += 1
        time.sleep(0.4)
        return _queues_page(inbox)

    page = _until("the webhook receives the queues page", paged)
    print(
        f"\npaged {time.monotonic() - stopped_at:.1f} s after the SIGSTOP "
        f"({'defaults' if DEFAULTS else FAST}): {page['data']['detail'].get('error')}"
    )
    [named] = page["data"]["detail"]["held_by_stalled_worker"]
    assert named["task_id"] == task_id and named["worker"] == node
    assert "stale" not in page["data"]["detail"]  # the other worker kept the queues moving

    signal_group(stalled, signal.SIGCONT)
    row_lock.release()
