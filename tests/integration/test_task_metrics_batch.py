"""A task's metric updates reach Redis together, when it ends (one round trip per task)."""

from __future__ import annotations

from typing import Any

import pytest

from core import metrics

pytestmark = pytest.mark.integration


class _Signal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, receiver: Any, weak: bool = True) -> None:
        self.receivers.append(receiver)

    def send(self, **kwargs: Any) -> None:
        for receiver in self.receivers:
            receiver(**kwargs)


class _Signals:
    def __init__(self) -> None:
        self.task_prerun = _Signal()
        self.task_postrun = _Signal()


class _Task:
    name = "vigil.stops.on_price"


@pytest.fixture
def signals(redis_client):
    metrics.configure_metrics(redis_client)
    found = _Signals()
    metrics.install_task_metrics(found)
    yield found
    metrics.configure_metrics(None)


def _lock_waits(redis_client) -> float:
    values = metrics.MetricsStore(redis_client).histogram_values(metrics.LOCK_WAIT)
    return values.get(("acquired",), ([], 0.0, 0.0))[2]


def test_updates_inside_a_task_are_written_with_its_own_at_its_end(redis_client, signals):
    signals.task_prerun.send(task_id="t1")
    metrics.observe_lock_wait(0.002, acquired=True)
    metrics.observe_tick_to_order(0.03)
    assert _lock_waits(redis_client) == 0  # held until the task ends
    signals.task_postrun.send(task_id="t1", task=_Task(), state="SUCCESS")
    assert _lock_waits(redis_client) == 1
    store = metrics.MetricsStore(redis_client)
    assert store.histogram_values(metrics.TICK_TO_ORDER)[()][2] == 1
    assert store.counter_values(metrics.TASKS)[("vigil.stops.on_price", "success")] == 1


def test_a_nested_task_does_not_flush_its_callers_updates_early(redis_client, signals):
    signals.task_prerun.send(task_id="outer")
    metrics.observe_lock_wait(0.001, acquired=True)
    signals.task_prerun.send(task_id="inner")
    signals.task_postrun.send(task_id="inner", task=_Task(), state="SUCCESS")
    assert _lock_waits(redis_client) == 0
    signals.task_postrun.send(task_id="outer", task=_Task(), state="SUCCESS")
    assert _lock_waits(redis_client) == 1


def test_updates_outside_any_task_are_written_at_once(redis_client, signals):
    metrics.observe_lock_wait(0.001, acquired=True)
    assert _lock_waits(redis_client) == 1


def test_a_price_batchs_runs_hand_their_updates_to_the_task_for_its_one_write(
    redis_client, signals
):
    """The runs of a batch are threads of the task: their updates wait for the task's end."""
    from core.services import price_batch
    from core.services.deps import Deps
    from core.services.price_path import PriceTaskResult

    def run_one(deps: Any, symbol: str) -> PriceTaskResult:
        metrics.observe_lock_wait(0.001, acquired=True)
        metrics.observe_tick_to_order(0.02)
        return PriceTaskResult(None, None)

    original = price_batch.deps_in_thread
    price_batch.deps_in_thread = lambda venue: Deps(None, None, None, None)  # type: ignore
    try:
        signals.task_prerun.send(task_id="batch")
        report = price_batch.on_prices("binance", ["A", "B", "C"], run_one, lambda s: None, 8)
        assert sorted(report.ran) == ["A", "B", "C"]
        assert _lock_waits(redis_client) == 0  # nothing written by the runs' threads
        signals.task_postrun.send(task_id="batch", task=_Task(), state="SUCCESS")
    finally:
        price_batch.deps_in_thread = original  # type: ignore[assignment]
    assert _lock_waits(redis_client) == 3
    store = metrics.MetricsStore(redis_client)
    assert store.histogram_values(metrics.TICK_TO_ORDER)[()][2] == 3


def test_updates_handed_over_outside_a_task_are_written_at_once(redis_client, signals):
    with metrics.held_for_hand_over() as held:
        metrics.observe_lock_wait(0.001, acquired=True)
    assert _lock_waits(redis_client) == 0 and len(held) == 1
    metrics.hand_over(held)
    assert _lock_waits(redis_client) == 1
