"""Flower's task events from a real worker on the real broker (``vigil worker`` runs with
``-E``): every task sends them but the hot price tasks (tasks/monitoring.py), whose sender
sends no ``task-sent`` either."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from core import task_names as names
from core.config import get_settings
from tasks.app import create_app
from tasks.ping import ping_result
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(sim, clean_db, redis_url, tmp_path):
    """A worker as ``vigil worker`` runs it (prefork, task events on) on two queues."""
    env = dict(
        os.environ, VIGIL_HOME=str(tmp_path), VIGIL_EXCHANGE="paper", VIGIL_EXCHANGE_URL=sim.url
    )
    with Processes(env) as processes:
        yield processes.worker(
            *("--queues", "stops,maintenance", "--name", "events"),
            *("--pool", "prefork", "--concurrency", "1"),
        )


@contextmanager
def captured_events(celery: Any) -> Iterator[list[dict[str, Any]]]:
    """Every event published on the broker while the block runs (a monitor's view)."""
    seen: list[dict[str, Any]] = []
    with celery.connection_for_read() as conn:
        receiver = celery.events.Receiver(conn, handlers={"*": seen.append})
        thread = threading.Thread(
            target=lambda: receiver.capture(limit=None, timeout=None, wakeup=False), daemon=True
        )
        thread.start()
        try:
            yield seen
        finally:
            receiver.should_stop = True
            thread.join(10)


def wait_for(probe: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def types_of(seen: list[dict[str, Any]], task_id: str) -> set[str]:
    return {e["type"] for e in list(seen) if e.get("uuid") == task_id}


def test_the_price_tasks_send_no_task_events_while_every_other_task_does(worker):
    get_settings.cache_clear()
    celery = create_app(get_settings())
    with captured_events(celery) as seen:
        # subscribed once the worker's own heartbeat event arrives (every 2 s)
        wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in list(seen)), what="events")
        batch = celery.send_task(names.ON_PRICES, args=["binance", []], ignore_result=False)
        assert batch.get(timeout=60) == {"ran": [], "retried": [], "failed": []}
        lone = celery.send_task(names.ON_PRICE, args=["binance", "ETHUSDT"], ignore_result=False)
        assert lone.get(timeout=60)["position_id"] is None
        with ping_result(celery) as ping:
            assert ping.get(timeout=60)["pong"] is True
            wait_for(lambda: "task-succeeded" in types_of(seen, ping.id), what="ping's events")
        monitored = types_of(seen, ping.id)
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= monitored
    assert types_of(seen, batch.id) == set() and types_of(seen, lone.id) == set()


def test_only_the_price_tasks_are_unmonitored():
    from tasks.app import app

    celery = create_app(get_settings())
    celery.loader.import_default_modules()
    quiet = {name for name, task in app.tasks.items() if not task.send_events}
    assert quiet == {names.ON_PRICE, names.ON_PRICES}
    assert celery.conf.worker_send_task_events and celery.conf.task_send_sent_event
    # the sender's half: a price task's message carries no task-sent event, a ping's does
    message = celery.amqp.as_task_v2
    assert message("a", names.ON_PRICE, ("binance", "X"), create_sent_event=True).sent_event is None
    assert message("b", names.ON_PRICES, ("binance", []), create_sent_event=True).sent_event is None
    assert message("c", names.PING, (), create_sent_event=True).sent_event is not None
