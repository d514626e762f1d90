"""A ping task round-tripped through the broker and a worker: "is a worker answering?".

Asked by ``vigil up`` at start, by the chaos run after each fault, and by tests. The result is
forgotten and its subscription dropped as soon as the question is answered, while Redis still
answers: a result left pending would be unsubscribed later by whichever thread's garbage
collection finds it, and if Redis has gone away by then that thread waits for the result
backend to give up reconnecting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from celery import Celery

from core.task_names import PING


@contextmanager
def ping_result(app: Celery) -> Iterator[Any]:
    """Send a ping whose result is kept; release it on the way out."""
    result = app.send_task(PING, ignore_result=False)
    try:
        yield result
    finally:
        with suppress(Exception):  # noqa: BLE001 - Redis may be the thing that is down
            result.forget()
        with suppress(Exception):  # noqa: BLE001
            result.backend.remove_pending_result(result)


def worker_answers(app: Celery, timeout: float) -> bool:
    """True when a worker ran a ping within ``timeout`` seconds."""
    try:
        with ping_result(app) as result:
            return bool(result.get(timeout=timeout))
    except Exception:  # noqa: BLE001 - celery's TimeoutError and broker errors alike
        return False
