"""The ``queues`` component of ``/health``: is every queue being consumed?

A worker can be alive and still take no task: it answers Celery's broadcast ping (its control
channel is not its task consumer), and while any other worker runs beat's heartbeat task the
``beat`` and ``workers`` components stay green. A queue that only that worker consumes (a
venue's own queues, ``VIGIL_VENUE_QUEUES``) then fills silently. What shows it whatever the
cause (a stalled consumer, every worker dead or busy far too long) is the age of the oldest
message waiting in a queue: every message is published with its time (tasks/publish.py),
and nothing in the engine is meant to wait in a queue for long.

That misses one stalled worker among several consuming the same queues: the queues move,
and the message the stalled worker had received waits, unacknowledged, for the visibility
timeout. ``held_by_stalled_workers`` finds those (core/domain/held_messages.py says how a
stalled holder is told from a long-running task).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from core.clock import Clock, redis_now
from core.domain.held_messages import HeldMessage, LoopBeat, StalledHold, stalled_holds
from core.queues import UNACKED_INDEX_KEY, UNACKED_KEY, WORKER_LOOPS_KEY, read_queue

HELD_READ_LIMIT = 500  # received messages read per check (a worker holds its prefetch, ~2)
HELD_SHOWN = 10  # stalled holds named in the detail


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
    client: redis.Redis,
    clock: Clock,
    queues: Sequence[str],
    stale_after: float,
    holder_stall_after: float | None = None,
) -> tuple[bool, dict[str, Any]]:
    """(healthy, detail) of the ``queues`` component; a Redis error is a failure.

    Fails on a queue whose oldest waiting message is older than ``stale_after`` s, and (with
    ``holder_stall_after``) on a received message held by a stalled worker."""
    try:
        ages = oldest_ages(client, clock, queues)
        stalled = (
            []
            if holder_stall_after is None
            else held_by_stalled_workers(client, holder_stall_after)
        )
    except RedisError as exc:
        return False, {"error": str(exc).splitlines()[0][:200]}
    stale = stale_queues(ages, stale_after)
    detail: dict[str, Any] = {
        "oldest_age_seconds": round(max(ages.values(), default=0.0), 1),
        "stale_after_seconds": stale_after,
    }
    errors = []
    if stale:
        detail["stale"] = stale
        errors.append("messages wait unconsumed: " + ", ".join(stale))
    if holder_stall_after is not None:
        detail["holder_stall_after_seconds"] = holder_stall_after
    if stalled:
        detail["held_by_stalled_worker"] = [hold_detail(h) for h in stalled[:HELD_SHOWN]]
        named = ", ".join(map(describe, stalled[:HELD_SHOWN]))
        more = f" and {len(stalled) - HELD_SHOWN} more" if len(stalled) > HELD_SHOWN else ""
        errors.append(f"messages held by a stalled worker: {named}{more}")
    if errors:
        detail["error"] = "; ".join(errors)
    return not errors, detail


def held_by_stalled_workers(client: redis.Redis, stall_after: float) -> list[StalledHold]:
    """Received messages held past ``stall_after`` s by no worker whose loop still beats.

    Timed by Redis's clock, the one each beat is stamped with (``tasks/loop_beat.py``): an API
    host's clock that is off cannot make live workers look silent. A message's receipt time is
    its worker's clock (kombu's), so a worker host's offset moves when its stall is named by
    that much."""
    now = redis_now(client)
    held = received_messages(client, received_before=now - stall_after)
    if not held:
        return []
    return stalled_holds(held, loop_beats(client), now, stall_after, broker_started_at(client, now))


def broker_started_at(client: redis.Redis, now: float) -> float | None:
    """When Redis last started (epoch s, rounded down to be safe), None if it will not say
    (a managed Redis may refuse INFO): then no message gets the reconnection grace."""
    try:
        uptime = float(client.info("server")["uptime_in_seconds"])
    except (ResponseError, KeyError, TypeError, ValueError):
        return None
    return now - uptime - 1.0  # INFO gives whole seconds


def received_messages(client: redis.Redis, received_before: float) -> list[HeldMessage]:
    """The unacknowledged messages received before ``received_before`` (epoch s), oldest
    first; one acknowledged between the two reads is skipped."""
    index: list[tuple[bytes, float]] = list(
        client.zrangebyscore(  # type: ignore[arg-type]
            UNACKED_INDEX_KEY,
            "-inf",
            received_before,
            start=0,
            num=HELD_READ_LIMIT,
            withscores=True,
        )
    )
    if not index:
        return []
    raws: list[bytes | None] = list(client.hmget(UNACKED_KEY, [tag for tag, _ in index]))  # type: ignore[arg-type]
    held = []
    for (tag, received_at), raw in zip(index, raws, strict=True):
        if raw is not None:
            held.append(parse_held(_text(tag), float(received_at), raw))
    return held


def parse_held(tag: str, received_at: float, raw: bytes | str) -> HeldMessage:
    """A message of kombu's ``unacked`` hash (``[message, exchange, routing key]``); what
    cannot be read still counts, as a message of an unknown task."""
    try:
        payload, _exchange, routing_key = json.loads(raw)
        headers = payload.get("headers") or {}
    except (ValueError, TypeError, AttributeError):
        return HeldMessage(tag, "?", None, None, received_at)
    eta = _epoch(headers.get("eta"))
    return HeldMessage(
        tag,
        str(routing_key),
        headers.get("task"),
        headers.get("id"),
        max(received_at, eta) if eta is not None else received_at,
    )


def loop_beats(client: redis.Redis) -> list[LoopBeat]:
    """Every worker's last main-loop beat (tasks/loop_beat.py); unreadable ones are skipped."""
    beats = []
    for worker, raw in client.hgetall(WORKER_LOOPS_KEY).items():
        try:
            value = json.loads(raw)
            beats.append(
                LoopBeat(_text(worker), float(value["at"]), frozenset(map(str, value["tags"])))
            )
        except (ValueError, TypeError, KeyError):
            continue
    return beats


def hold_detail(hold: StalledHold) -> dict[str, Any]:
    message = hold.message
    silent = hold.worker_silent_seconds
    return {
        "queue": message.queue,
        "task": message.task,
        "task_id": message.task_id,
        "held_seconds": round(hold.held_seconds, 1),
        "worker": hold.worker,
        "worker_silent_seconds": None if silent is None else round(silent, 1),
    }


def describe(hold: StalledHold) -> str:
    """``stops: vigil.stops.x held 42.0 s by w1@host (silent 41.2 s)``, for the page."""
    by = f" by {hold.worker} (silent {hold.worker_silent_seconds:.1f} s)" if hold.worker else ""
    task = hold.message.task or "a message"
    return f"{hold.message.queue}: {task} held {hold.held_seconds:.1f} s{by}"


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
