"""`vigil task`: any registered task by name through the real broker to a real worker, whose
Celery signals count it into the metrics the API serves."""

import os
import time

import pytest
import redis
from typer.testing import CliRunner

from core.config import get_settings
from core.metrics import TASKS, MetricsStore
from shell.cli import app
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(database_url, redis_url, tmp_path_factory):
    env = dict(os.environ, VIGIL_HOME=str(tmp_path_factory.mktemp("task-worker")))
    with Processes(env) as processes:
        yield processes.worker("--pool", "solo", "--name", "cli-task")


@pytest.fixture
def vigil(worker, clean_db, redis_url):
    get_settings.cache_clear()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def counted(outcome: str, task: str = "vigil.maintenance.ping") -> float:
    store = MetricsStore(redis.Redis.from_url(os.environ["VIGIL_REDIS_URL"]))
    return store.counter_values(TASKS).get((task, outcome), 0)


def wait_until(probe, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def test_list_shows_every_task_with_its_queue_and_purpose(vigil):
    result = vigil("task", "--list")
    assert result.exit_code == 0
    assert "vigil.maintenance.ping" in result.output
    assert "vigil.maintenance.deliver_alerts" in result.output
    assert "vigil.orders.open_position" in result.output and "orders" in result.output


def test_a_short_name_is_sent_and_its_result_awaited(vigil):
    before = counted("success")
    result = vigil("task", "ping", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "sent vigil.maintenance.ping to queue maintenance" in result.output
    assert '"pong": true' in result.output
    wait_until(lambda: counted("success") == before + 1)  # counted in the worker


def test_a_task_that_fails_exits_1(vigil):
    name = "vigil.maintenance.recover_interrupted_openings"
    before = counted("failure", name)
    # well-typed, so it is sent, but too large a timespan for the worker's clock arithmetic
    result = vigil("task", name, "--arg", "min_age_seconds=1e300", "--wait", "--timeout", "60")
    assert result.exit_code == 1, result.output
    wait_until(lambda: counted("failure", name) == before + 1)


def test_arguments_the_task_does_not_take_are_refused_before_sending(vigil):
    result = vigil("task", "ping", "--arg", "bogus=1")
    assert result.exit_code == 2 and "unexpected keyword argument 'bogus'" in result.output
    result = vigil("task", "reconciliation", "--symbol", "BTCUSDT")
    assert result.exit_code == 2 and "takes no symbol" in result.output
    name = "recover_interrupted_openings"
    result = vigil("task", name, "--arg", "min_age_seconds=soon")
    assert result.exit_code == 2 and "min_age_seconds='soon'" in result.output
    result = vigil("task", "reconciliation", "--exchange", "bybit")
    assert result.exit_code == 2 and "(binance), not 'bybit'" in result.output


def test_exchange_and_symbol_reach_the_tasks_that_take_them(vigil):
    result = vigil("task", "reconciliation", "--exchange", "binance")  # the configured one
    assert result.exit_code == 0, result.output
    result = vigil("task", "zombie_cleanup", "--symbol", "btcusdt", "--arg", "dry_run=true")
    assert result.exit_code == 0, result.output


def test_an_unknown_task_exits_2_and_lists_what_exists(vigil):
    result = vigil("task", "no_such_task")
    assert result.exit_code == 2
