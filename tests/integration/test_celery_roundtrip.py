"""A real worker process on the real broker runs the heartbeat task and writes its row."""

import os
import time

import pytest
from sqlalchemy import select

from core.db.models import Heartbeat
from core.db.session import new_session
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(clean_db, redis_url, tmp_path):
    with Processes(dict(os.environ, VIGIL_HOME=str(tmp_path))) as processes:
        yield processes.worker("--pool", "solo", "--name", "t1")


def test_heartbeat_task_round_trips_through_broker_worker_and_database(worker):
    from core.config import get_settings
    from tasks.app import create_app

    get_settings.cache_clear()
    celery = create_app(get_settings())
    result = celery.send_task(
        "vigil.maintenance.heartbeat", kwargs={"component": "beat"}, ignore_result=False
    )
    stamped = result.get(timeout=60)
    assert stamped
    with new_session() as s:
        components = {hb.component for hb in s.scalars(select(Heartbeat))}
    assert "beat" in components
    assert any(c.startswith("worker:") for c in components)


def test_ping_is_routed_to_the_maintenance_queue(worker):
    from core.config import get_settings
    from tasks.app import create_app
    from tasks.ping import ping_result

    celery = create_app(get_settings())
    route = celery.amqp.router.route({}, "vigil.maintenance.ping")
    assert route["queue"].name == "maintenance"
    deadline = time.monotonic() + 60
    with ping_result(celery) as sent:
        reply = sent.get(timeout=max(1, deadline - time.monotonic()))
    assert reply["pong"] is True
