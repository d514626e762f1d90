"""The guardians as Celery tasks: registered under the names operators type, scheduled by
beat from settings, run by a real worker against the paper exchange, reconciliation at
worker start."""

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.config import get_settings, load_settings
from core.db.models import Position
from core.db.session import unit_of_work
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tests.fixtures.processes import Processes

pytestmark = pytest.mark.integration

NAMES = (
    "vigil.maintenance.protection_check",
    "vigil.maintenance.reconciliation",
    "vigil.maintenance.zombie_cleanup",
)


def test_guardian_tasks_are_registered_on_the_maintenance_queue():
    import tasks.guardians  # noqa: F401  (the worker imports it through TASK_MODULES)
    from tasks.app import TASK_MODULES, app

    assert "tasks.guardians" in TASK_MODULES
    for name in NAMES:
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "maintenance"


def test_beat_runs_each_guardian_at_its_configured_interval():
    from beat_schedule import build_schedule

    settings = load_settings(protection_interval=7, reconciliation_interval=11, zombie_interval=13)
    by_task = {entry["task"]: entry for entry in build_schedule(settings).values()}
    assert by_task[NAMES[0]]["schedule"] == 7
    assert by_task[NAMES[1]]["schedule"] == 11
    assert by_task[NAMES[2]]["schedule"] == 13
    assert by_task[NAMES[2]]["options"]["expires"] == pytest.approx(13 * 1.5)


@pytest.fixture
def worker(sim, clean_db, redis_url, tmp_path) -> Iterator[Callable[[], subprocess.Popen]]:
    """A real worker; started after the test has prepared the exchange (it reconciles at
    start)."""
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_POSITION_SIZE_USDT="200",
        VIGIL_ENTRY_FILL_TIMEOUT="2",
    )
    with Processes(env) as processes:
        yield lambda: processes.worker("--pool", "solo", "--name", "guardian")


def wait_for(probe, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def active_on(symbol):
    with unit_of_work() as s:
        return s.scalars(
            select(Position).where(Position.symbol == symbol, Position.status == "active")
        ).all()


def test_a_starting_worker_reconciles_and_adopts_a_position_opened_while_it_was_down(sim, worker):
    sim.admin(
        "POST", "/_sim/open_position", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.4"}
    )
    worker()

    [position] = wait_for(lambda: active_on("ETHUSDT"))

    assert position.quantity == Decimal("0.4")
    stops = [o for o in sim.state()["open_algo_orders"] if o["symbol"] == "ETHUSDT"]
    assert len(stops) == 1


def test_guardian_tasks_run_on_a_worker_and_return_their_counts(sim, deps, worker):
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", "BTCUSDT", "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    [stop] = sim.state()["open_algo_orders"]
    deps.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    sim.admin(
        "POST",
        "/_sim/order",
        {
            "symbol": "SOLUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "100",
            "quantity": "1",
            "reduceOnly": True,
        },
    )
    worker()
    from tasks.app import create_app

    get_settings.cache_clear()
    celery = create_app(get_settings())

    def run(name, **kwargs):
        return celery.send_task(name, kwargs=kwargs, ignore_result=False).get(timeout=60)

    protected = run(NAMES[0])
    assert protected["stops_placed"] == 1 and protected["positions"] == 1
    synced = run(NAMES[1])
    assert synced["exchange_positions"] == 1 and synced["actions"] == {}
    dry = run(NAMES[2], dry_run="true")
    assert dry["dry_run"] is True and dry["detected"] == 1 and dry["cancelled"] == 0
    cleaned = run(NAMES[2])
    assert cleaned["cancelled"] == 1
    algo = sim.state()["open_algo_orders"]
    assert [o["symbol"] for o in algo] == ["BTCUSDT"]
