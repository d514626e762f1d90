"""Which tasks send Flower's monitoring events: every task but the hot price tasks.

Why: a worker started with task events (``vigil worker`` passes ``-E``) publishes three of
them for every task it runs (received, started, succeeded; retried or failed instead of the
last), each built, serialised and published to Redis by the worker's main process, and the
sender publishes a fourth (sent). For the price tasks (``on_price``, ``on_prices``), queued
by the ingest a dozen times a second at 10 Hz and each carrying one or two symbols, that is a
share of Celery's own cost paid by almost every stop move. Flower still shows these queues'
lengths (read from the broker), the workers (their heartbeats are events of their own) and
every other task; what it no longer lists is each price task (docs/operations.md). The
engine's own record of a price run is unchanged: its events in PostgreSQL, its log lines and
its counts and durations in ``/metrics`` (``core/metrics.py``, from Celery's signals, which do
not depend on events).

Both halves follow the one set below: the worker side through each task's ``send_events``
attribute (``tasks/base.vigil_task``), the sender side through the Celery app's message
factory (``UnmonitoredSentAMQP``), so a price task is not a "sent" task Flower would show as
never received.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP

from core import task_names as names

UNMONITORED_TASKS = frozenset({names.ON_PRICE, names.ON_PRICES})
"""Tasks that send no task events (worker side) and no ``task-sent`` event (sender side)."""


def sends_events(task_name: str) -> bool:
    """Whether a worker running ``task_name`` sends its task events (when events are on)."""
    return task_name not in UNMONITORED_TASKS


class UnmonitoredSentAMQP(AMQP):
    """Celery's message factory, without the ``task-sent`` event of an unmonitored task."""

    def as_task_v2(self, task_id: str, name: str, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(task_id, name, *args, **kwargs)
        if message.sent_event is not None and not sends_events(name):
            return message._replace(sent_event=None)
        return message
