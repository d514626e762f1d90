"""The broker's queues, seen from outside Celery: their names, their depth, their oldest message.

Why here and not in tasks/: the API measures the queues (``/metrics``) and core never imports
Celery; tasks/app.py takes the queue names from here, so both sides name the same queues.

How a queue looks in Redis (kombu's Redis transport): a list per queue, new messages pushed
on the left and taken from the right, so the oldest waiting message is the rightmost one;
with message priorities, one more list per priority step (``<queue>\\x06\\x16<step>``).
Messages a worker has taken but not acknowledged are not waiting and not counted.

The age of a message comes from the ``vigil_sent_at`` header every publisher that loads the
Celery app stamps (tasks/publish.py); a message without it (a foreign client) is counted in
the depth but gives no age.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.clock import Clock

log = logging.getLogger(__name__)

QUEUES: tuple[str, ...] = ("signals", "orders", "stops", "maintenance")
# the queues a venue listed in VIGIL_VENUE_QUEUES gets its own copy of (maintenance stays
# shared: each guardian run covers every venue)
VENUE_QUEUE_KINDS: tuple[str, ...] = ("signals", "orders", "stops")


def venue_queue(queue: str, venue: str) -> str:
    """The name of ``venue``'s own ``queue``: ``stops`` -> ``stops.bybit``."""
    return f"{queue}.{venue}"


def venue_queues(venue: str) -> list[str]:
    """Every queue of ``venue``'s own (what ``vigil worker --venue`` consumes)."""
    return [venue_queue(queue, venue) for queue in VENUE_QUEUE_KINDS]


SENT_AT_HEADER = "vigil_sent_at"
# kombu's Redis transport: messages received and not acknowledged (delivery tag -> the message,
# its exchange and routing key), and when each was received (delivery tag -> epoch s)
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# each worker's main-loop beat: hostname -> {"at": epoch s, "tags": [delivery tags it holds]}
# (tasks/loop_beat.py writes it, core/services/queue_health.py reads it)
WORKER_LOOPS_KEY = "vigil:worker-loops"
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps; step 0 is the queue's own list


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s waiting messages, lowest priority step first."""
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def sent_at(raw: bytes | str | None) -> float | None:
    """The publish time (epoch seconds) a waiting message carries, if any."""
    if raw is None:
        return None
    try:
        value = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class QueueState:
    depth: int
    oldest_sent_at: float | None


def read_queue(client: redis.Redis, queue: str) -> QueueState:
    """Depth and oldest publish time of ``queue``, in one pipelined round trip."""
    keys = queue_keys(queue)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
        pipe.lindex(key, -1)
    replies = pipe.execute()
    depth = sum(int(n) for n in replies[0::2])
    times = [t for t in (sent_at(raw) for raw in replies[1::2]) if t is not None]
    return QueueState(depth, min(times) if times else None)


class QueueCollector(Collector):
    """``vigil_queue_depth{queue}`` and ``vigil_queue_oldest_message_age_seconds{queue}``."""

    def __init__(self, client: redis.Redis, clock: Clock, queues: Sequence[str] = QUEUES):
        self.client = client
        self.clock = clock
        self.queues = tuple(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "vigil_queue_depth", "Messages waiting in the broker queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "vigil_queue_oldest_message_age_seconds",
            "Seconds the oldest waiting message of the queue has waited (0 when empty).",
            labels=["queue"],
        )
        now = self.clock.now().timestamp()
        for queue in self.queues:
            try:
                state = read_queue(self.client, queue)
            except redis.RedisError as exc:
                log.warning("queue %s not measured: %s", queue, exc)
                continue
            depth.add_metric([queue], state.depth)
            if state.depth == 0:
                age.add_metric([queue], 0.0)
            elif state.oldest_sent_at is not None:
                age.add_metric([queue], max(0.0, now - state.oldest_sent_at))
        yield depth
        yield age
