"""Each worker's main loop says, every couple of seconds, which messages it holds.

Read by the ``queues`` component of /health (core/services/queue_health.py): a message
received by a worker and held past ``VIGIL_HEALTH_HOLDER_STALL_SECONDS`` that no worker with
a fresh beat claims sits with a stalled worker (core/domain/held_messages.py says why this
and not a ping, an ``inspect`` or the task's age).

Why the main loop: it is what receives messages, hands them to the pool, enforces the time
limits and acknowledges; a SIGSTOP or a call that never returns stops it, and with it this
beat, while a long task running in a pool process does not. The beat rides the loop's own
timer (as Celery's worker heartbeat does). The solo pool runs each task inside that loop, so
a long task would silence it: there the beat comes from a thread of the worker's process,
which a SIGSTOP still stops, but a loop stuck in a task does not (the solo pool has no time
limits either; deployments use the prefork pool).

One hash field per worker (its hostname): the time and the delivery tags of every request it
holds (running, handed to the pool, reserved, waiting for an ETA). A write is a single HSET
with a 1 s socket timeout and no retry; a failed one is skipped (Redis down fails /health on
its own). Fields of workers gone for a day are pruned when a worker starts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from core.clock import redis_now
from core.config import Settings, get_settings
from core.endpoints import resolve_redis_url
from core.queues import WORKER_LOOPS_KEY
from core.redis_scripts import run_script

log = logging.getLogger(__name__)

PRUNE_AFTER_SECONDS = 86400.0
MAX_INTERVAL_SECONDS = 2.0


STAMPED_BEAT = """
local t = redis.call('TIME')
local stamp = string.format('{"at": %s.%06d, ', t[1], tonumber(t[2]))
redis.call('HSET', KEYS[1], ARGV[1], stamp .. ARGV[2])
"""
"""A beat stamped with Redis's own clock (ARGV[2]: the rest of the JSON object after its
brace): the reader compares it with Redis's clock too, so a worker host whose clock is off
does not make every live worker look silent."""


def beat_interval(settings: Settings) -> float:
    """Several beats per bound: one late turn of a loaded loop must not look like a stall."""
    return max(0.1, min(MAX_INTERVAL_SECONDS, settings.health_holder_stall_seconds / 6))


def held_delivery_tags() -> list[str] | None:
    """Delivery tags of every request this worker holds: active, reserved, scheduled; None
    when the sets kept changing under the copy (a beat naming nothing would disown them)."""
    from celery.worker import state

    kinds = ("active_requests", "reserved_requests", "scheduled_requests")
    for _ in range(5):  # the solo pool's beat thread may meet a set being changed
        try:
            requests = [r for kind in kinds for r in list(getattr(state, kind, ()))]
        except RuntimeError:
            continue
        tags = (getattr(getattr(r, "message", None), "delivery_tag", None) for r in requests)
        return sorted({str(tag) for tag in tags if tag is not None})
    return None


class BeatWriter:
    """Writes one worker's beat; never raises (it runs inside the worker's main loop)."""

    def __init__(self, worker: str, client: redis.Redis) -> None:
        self.worker = worker
        self.client = client
        self._failing = False

    def write(self) -> None:
        tags = held_delivery_tags()
        if tags is None:  # the last beat stands; the next one names them
            return
        rest = json.dumps({"tags": tags, "pid": os.getpid()})
        try:
            run_script(self.client, STAMPED_BEAT, 1, WORKER_LOOPS_KEY, self.worker, rest[1:])
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("main-loop beat not written: %s", exc)
            self._failing = True
            return
        except Exception:  # noqa: BLE001 - a beat must never end the loop that drives it
            log.exception("main-loop beat not written")
            return
        self._failing = False

    def prune(self, older_than: float = PRUNE_AFTER_SECONDS) -> None:
        """Drop the fields of workers whose last beat is older than ``older_than`` s."""
        try:
            now = redis_now(self.client)
            for worker, raw in self.client.hgetall(WORKER_LOOPS_KEY).items():
                try:
                    at = float(json.loads(raw)["at"])
                except (ValueError, TypeError, KeyError):
                    at = 0.0
                if now - at > older_than:
                    self.client.hdel(WORKER_LOOPS_KEY, worker)
        except (RedisError, OSError) as exc:
            log.debug("main-loop beats not pruned: %s", exc)


class MainLoopBeat(bootsteps.StartStopStep):
    """Consumer bootstep: the beat starts with the task consumer (again after a reconnect,
    with one beat at once) and stops with it, except when the worker shuts down.

    A warm shutdown stops the loop first and then waits for the running tasks (compose gives
    them 200 s): those are still held by a live process, so from then on a thread names them
    until the process exits. A worker killed at the end of its grace stops beating with it.
    During a reconnect the beat pauses; the tasks' messages may then be named once the pause
    outlasts the bound (Redis was down: ``redis`` fails meanwhile anyway).
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.writer: BeatWriter | None = None
        self.entry: Any = None
        self.thread_stop: threading.Event | None = None

    def start(self, c: Any) -> None:
        settings = get_settings()
        if self.writer is None:
            client = redis.Redis.from_url(
                resolve_redis_url(settings),
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0),  # redis-py's default retries held the loop ~4 s
            )
            self.writer = BeatWriter(c.hostname, client)
            self.writer.prune()
        self._stop_beating()
        self.writer.write()
        interval = beat_interval(settings)
        if _runs_tasks_in_its_loop(c):
            self._beat_from_a_thread(interval)
        else:
            self.entry = c.timer.call_repeatedly(interval, self.writer.write)

    def stop(self, c: Any) -> None:
        shutting_down = _shutting_down(c)
        if shutting_down and self.thread_stop is not None:
            return  # already beating from a thread until the process exits
        self._stop_beating()
        if shutting_down and self.writer is not None:
            # not past the visibility timeout: by then the sweep has put every held message
            # back, and a worker embedded in a longer-lived process leaves no beat behind
            settings = get_settings()
            self._beat_from_a_thread(beat_interval(settings), settings.broker_visibility_timeout)

    shutdown = stop
    terminate = stop

    def _beat_from_a_thread(self, interval: float, for_seconds: float | None = None) -> None:
        assert self.writer is not None
        self.thread_stop = threading.Event()
        threading.Thread(
            target=_beat_until,
            args=(self.writer, interval, self.thread_stop, for_seconds),
            name="vigil-loop-beat",
            daemon=True,
        ).start()

    def _stop_beating(self) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        if self.thread_stop is not None:
            self.thread_stop.set()
            self.thread_stop = None


def _runs_tasks_in_its_loop(c: Any) -> bool:
    return type(getattr(c, "pool", None)).__module__ == "celery.concurrency.solo"


def _shutting_down(c: Any) -> bool:
    """The worker is stopping (not a consumer restarting after a broker loss)."""
    from celery.worker import state

    closing = getattr(getattr(c, "blueprint", None), "state", None) in (
        bootsteps.CLOSE,
        bootsteps.TERMINATE,
    )
    requested = any(
        getattr(state, flag, None) not in (None, False)
        for flag in ("should_stop", "should_terminate")
    )
    return closing or requested


def _beat_until(
    writer: BeatWriter, interval: float, stop: threading.Event, for_seconds: float | None
) -> None:
    ends = None if for_seconds is None else time.monotonic() + for_seconds
    while not stop.wait(interval) and (ends is None or time.monotonic() < ends):
        writer.write()
