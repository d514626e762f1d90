"""Task arguments are checked against the task's signature in the task layer itself, so a
task sent through Flower (or straight onto the broker) meets the same rule as the API."""

import pytest

from core.api.task_args import BadTaskArguments, check_task_arguments
from tasks.guardians import zombie_cleanup
from tasks.orders import open_position_task
from tasks.stops import on_price_task


def test_values_are_coerced_to_the_annotated_types():
    assert check_task_arguments(open_position_task.run, {"position_id": "7"}) == {"position_id": 7}
    checked = check_task_arguments(zombie_cleanup.run, {"dry_run": "true", "symbols": ["BTCUSDT"]})
    assert checked == {"dry_run": "true", "symbols": ["BTCUSDT"]}  # bool | str keeps the text


@pytest.mark.parametrize(
    ("task", "kwargs", "reason"),
    [
        (open_position_task, {"position_id": "abc"}, "position_id='abc'"),
        (open_position_task, {"position_id": 1.5}, "position_id=1.5"),
        (open_position_task, {}, "missing a required argument: 'position_id'"),
        (open_position_task, {"position_id": 1, "force": True}, "unexpected keyword"),
        (on_price_task, {"exchange": "binance", "symbol": ["BTCUSDT"]}, "symbol=['BTCUSDT']"),
        (zombie_cleanup, {"dry_run": {"x": 1}}, "dry_run="),
    ],
)
def test_a_task_refuses_arguments_its_signature_does_not_take_before_it_runs(task, kwargs, reason):
    with pytest.raises(BadTaskArguments) as refused:
        task.run(**kwargs)  # the worker's call; nothing reached a database or an exchange
    assert reason in str(refused.value)
    assert task.name in str(refused.value)


def test_the_refusal_is_permanent_not_retried():
    assert not issubclass(BadTaskArguments, open_position_task.autoretry_for)
    result = open_position_task.apply(kwargs={"position_id": "abc"})
    assert result.failed() and isinstance(result.result, BadTaskArguments)


def test_the_registered_signature_is_the_tasks_own():
    import inspect

    assert list(inspect.signature(open_position_task.run).parameters) == ["position_id"]
    with pytest.raises(TypeError):
        open_position_task.apply_async(kwargs={"nope": 1})  # celery's own client-side check


def test_a_bound_task_is_checked_without_its_self():
    from tasks.stops import settle_close_task

    checked = check_task_arguments(settle_close_task.run, {"position_id": "12"})
    assert checked == {"position_id": 12}
    with pytest.raises(BadTaskArguments) as refused:
        check_task_arguments(settle_close_task.run, {"position_id": 1, "self": 2})
    assert "self" in str(refused.value)
    with pytest.raises(BadTaskArguments):
        settle_close_task.apply(kwargs={"position_id": "x"}).get()
