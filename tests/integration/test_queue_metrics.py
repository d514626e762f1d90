"""Queue depth and oldest message age in /metrics move when a queue fills; hand-sent tasks keep
their results while automatic senders' messages ask for none."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.clock import ManualClock
from core.config import get_settings
from core.queues import SENT_AT_HEADER, QueueCollector, read_queue
from tasks import publish
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


def scrape(client, clock) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(client, clock))
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {
        (sample.name, sample.labels["queue"]): sample.value
        for family in families
        for sample in family.samples
    }


@pytest.fixture
def celery(redis_url):
    from tasks.app import create_app

    get_settings.cache_clear()
    return create_app(get_settings())


def test_queue_depth_and_oldest_age_move_when_a_queue_fills(redis_client, celery):
    clock = ManualClock(datetime.now(UTC))
    empty = scrape(redis_client, clock)
    assert empty[("vigil_queue_depth", "stops")] == 0
    assert empty[("vigil_queue_oldest_message_age_seconds", "stops")] == 0

    for _ in range(5):  # no worker consumes: they wait
        celery.send_task("vigil.stops.trailing_sweep")
    clock.advance(seconds=90)
    filled = scrape(redis_client, clock)
    assert filled[("vigil_queue_depth", "stops")] == 5
    assert 85 <= filled[("vigil_queue_oldest_message_age_seconds", "stops")] <= 120
    assert filled[("vigil_queue_depth", "orders")] == 0  # each queue on its own

    redis_client.rpop("stops")  # a worker takes the oldest
    assert scrape(redis_client, clock)[("vigil_queue_depth", "stops")] == 4


@pytest.fixture
def by_hand():
    """This process as a person's tool (an earlier test may have built the ingest's sender,
    which marks the process automatic); the mark it had is restored afterwards."""
    was = publish._automatic
    publish._automatic = False
    yield
    publish._automatic = was


def test_messages_carry_their_publish_time_and_result_policy(redis_client, celery, by_hand):
    celery.send_task("vigil.maintenance.ping")  # a person's tool: result kept
    publish.mark_automatic()
    try:
        celery.send_task("vigil.maintenance.ping")  # beat, a worker, the ingest: no result
        # whoever asks for the result gets it, whatever kind of process sends it
        celery.send_task("vigil.maintenance.ping", ignore_result=False)
    finally:
        publish._automatic = False
    by_hand, automatic, asked = (
        json.loads(raw) for raw in redis_client.lrange("maintenance", 0, -1)[::-1]
    )
    assert by_hand["headers"]["ignore_result"] is False
    assert automatic["headers"]["ignore_result"] is True
    assert asked["headers"]["ignore_result"] is False
    assert isinstance(by_hand["headers"][SENT_AT_HEADER], float)
    assert read_queue(redis_client, "maintenance").depth == 3


def test_an_automatic_sender_never_subscribes_to_results(redis_client, celery, by_hand):
    """The ingest sends thousands of tasks: no result subscription per message, and so no
    reconnecting result backend when a dropped result is collected during a Redis outage."""
    publish.mark_automatic()
    try:
        for _ in range(3):
            sent = celery.send_task("vigil.maintenance.ping")
            assert sent.ignored is True
        assert celery.backend.result_consumer.subscribed_to == set()
        asked = celery.send_task("vigil.maintenance.ping", ignore_result=False)
        assert celery.backend.result_consumer.subscribed_to == {
            asked.backend.get_key_for_task(asked.id)
        }
    finally:
        publish._automatic = False


@pytest.fixture
def worker(clean_db, redis_url, tmp_path):
    with Processes(dict(os.environ, VIGIL_HOME=str(tmp_path))) as processes:
        yield processes.worker("--pool", "solo", "--name", "results")


def test_a_task_sent_like_celery_call_keeps_its_result(worker, celery, by_hand):
    """`celery call` and Flower send without asking for a result; it is stored anyway."""
    sent = celery.send_task("vigil.maintenance.ping")
    assert sent.get(timeout=60)  # hangs forever when the result is not stored
    assert celery.backend.get_task_meta(sent.id)["status"] == "SUCCESS"
    celery.backend.remove_pending_result(sent)  # while this Redis still answers


def test_beat_sends_its_tasks_without_asking_for_results(redis_client, redis_url, tmp_path):
    env = dict(os.environ, VIGIL_HOME=str(tmp_path), VIGIL_HEARTBEAT_INTERVAL="1")
    with Processes(env) as processes:
        processes.start("beat")
        raw = None
        deadline = time.monotonic() + 90
        while raw is None and time.monotonic() < deadline:  # no worker: the message waits
            raw = redis_client.rpop("maintenance")
            time.sleep(0.2)
    assert raw is not None, "beat sent nothing within 90 s"
    message = json.loads(raw)
    assert message["headers"]["task"] == "vigil.maintenance.heartbeat"
    assert message["headers"]["ignore_result"] is True
    assert message["headers"][SENT_AT_HEADER] > 0
