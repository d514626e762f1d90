"""The ``queues`` component of ``/health``: is every queue being consumed?

A worker can be alive and still take no task: it answers Celery's broadcast ping (its control
channel is not its task consumer), and while any other worker runs beat's heartbeat task the
``beat`` and ``workers`` components stay green. A queue that only that worker consumes (a
venue's own queues, ``VIGIL_VENUE_QUEUES``) then fills silently. What shows it whatever the
cause (a stalled consumer, every worker dead or busy far too long) is the age of the oldest
message waiting in a queue: every message is published with its time (tasks/publish.py),
and nothing in the engine is meant to wait in a queue for long.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import RedisError

from core.clock import Clock
from core.queues import read_queue


def stale_queues(ages: Mapping[str, float], stale_after: float) -> dict[str, float]:
    """The queues whose oldest waiting message has waited longer than ``stale_after`` s."""
    return {queue: round(age, 1) for queue, age in ages.items() if age > stale_after}


def oldest_ages(client: redis.Redis, clock: Clock, queues: Sequence[str]) -> dict[str, float]:
    """Seconds the oldest waiting message of each non-empty queue has waited."""
    now = clock.now().timestamp()
    ages: dict[str, float] = {}
    for queue in queues:
        state = read_queue(client, queue)
        if state.depth and state.oldest_sent_at is not None:
            ages[queue] = max(0.0, now - state.oldest_sent_at)
    return ages


def queues_detail(
    client: redis.Redis, clock: Clock, queues: Sequence[str], stale_after: float
) -> tuple[bool, dict[str, Any]]:
    """(healthy, detail) of the ``queues`` component; a Redis error is a failure."""
    try:
        ages = oldest_ages(client, clock, queues)
    except RedisError as exc:
        return False, {"error": str(exc).splitlines()[0][:200]}
    stale = stale_queues(ages, stale_after)
    detail: dict[str, Any] = {
        "oldest_age_seconds": round(max(ages.values(), default=0.0), 1),
        "stale_after_seconds": stale_after,
    }
    if stale:
        detail |= {"stale": stale, "error": "messages wait unconsumed: " + ", ".join(stale)}
    return not stale, detail
