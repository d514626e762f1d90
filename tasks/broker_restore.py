"""Messages a lost broker connection held are put back on their queues once Redis answers.

When the worker loses Redis, closing the old channel restores the messages it had received
but not acknowledged (kombu's ``restore_unacked``): a task waiting for its countdown or ETA,
a task received in the instant before the loss and not started yet, a running ``acks_late``
task. Redis is down at that moment, so the restore fails (a connection error the close
ignores), and the messages stay in Redis's unacked set until the visibility timeout's sweep
(``VIGIL_BROKER_VISIBILITY_TIMEOUT``, 300 s) puts them back. Found with real processes
(bench/bench_busy_broker_loss.py, ``--vigil-worker``): a heartbeat task received 6 ms before
Redis was killed ran only after that sweep, while every task sent after the restart ran at
once.

The guard: a failed restore on a closed or detached channel hands the delivery tags of the
messages no task is running for (or has been handed to the pool for) to a background thread,
which tries the same restore (kombu's ``restore_by_tag``, idempotent: a tag acknowledged
meanwhile restores nothing) every second until Redis answers. The messages of running tasks
are left where they are: each task's late acknowledgement settles its own (as before), so
this guard never hands out a task still running. (A restore that reaches Redis at the close,
kombu's own path when the connection broke but Redis answers, puts back every message the
channel held, running ones included, as it always did; the engine's tasks are idempotent
and their symbol locks keep two copies from acting at once.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kombu.transport import redis as kombu_redis

from core.queues import SENT_AT_HEADER
from tasks.broker_teardown import OneShotPool, channel_is_done

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# longest wait between two tries of a message that met an unexpected error (a Redis outage
# keeps the 1 s pace)
MAX_BACKOFF_SECONDS = 30.0
# how long a message may keep meeting unexpected errors before it is left to the visibility
# sweep (``VIGIL_BROKER_VISIBILITY_TIMEOUT``, 300 s), which puts it back by then anyway
GIVE_UP_SECONDS = 600.0
_GUARD_MARK = "_vigil_restore_guard"


@dataclass
class _Entry:
    """Tags of one QoS to put back, and when to try them next."""

    qos: Any
    tags: list[str]
    delay: float  # the wait before this entry's next try
    due: float  # monotonic time of the next try
    failing_since: float | None = None  # first unexpected error of these tags (None: none yet)


class PendingRestores:
    """Delivery tags whose restore met a dead Redis, per QoS, retried by one daemon thread.

    The thread outlives any error. A connection error means Redis is still down: the tags
    are tried again after ``retry_seconds``. Any other error (a bug, a message that cannot be
    read, an unforeseen state of kombu) is logged and the tags it concerned get a back-off of
    their own, doubling up to ``max_backoff``, so a permanent one cannot flood the log nor
    slow the restores of any other message (a later broker loss's among them). A tag still
    failing after ``give_up_after`` is dropped with an error: the visibility sweep has put it
    back by then. A tag acknowledged or restored meanwhile (its late ack, the sweep) restores
    nothing and counts as done.
    """

    def __init__(
        self,
        retry_seconds: float = RETRY_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        give_up_after: float = GIVE_UP_SECONDS,
    ) -> None:
        self.retry_seconds = retry_seconds
        self.max_backoff = max(max_backoff, retry_seconds)
        self.give_up_after = give_up_after
        self._lock = threading.Lock()
        self._wake = threading.Event()  # an entry was added: the wait may be shorter now
        self._pending: list[_Entry] = []
        self._thread: threading.Thread | None = None

    def add(self, qos: Any, tags: list[str]) -> None:
        with self._lock:
            self._queue(qos, tags, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="vigil-unacked-restore", daemon=True
                )
                self._thread.start()
        self._wake.set()
        log.warning("broker lost: %d received message(s) to put back once it answers", len(tags))

    def pending(self) -> int:
        with self._lock:
            return sum(len(entry.tags) for entry in self._pending)

    def _queue(self, qos: Any, tags: list[str], now: float) -> None:
        self._pending.append(_Entry(qos, list(tags), self.retry_seconds, now + self.retry_seconds))

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                wait = min(entry.due for entry in self._pending) - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
            try:
                self._try_due(time.monotonic())
            except Exception:  # noqa: BLE001 - the bookkeeping itself must not end the thread
                log.exception("restoring unacknowledged messages failed; retrying")
                time.sleep(self.retry_seconds)

    def _try_due(self, now: float) -> None:
        """One try of every entry due at ``now``; each one's tags left are queued again."""
        with self._lock:
            due = [entry for entry in self._pending if entry.due <= now]
        for entry in due:
            try:
                left = restore_tags(entry.qos, entry.tags)
            except Exception:  # noqa: BLE001 - keep the tags, try again later
                log.exception(
                    "%d unacknowledged message(s) not restored; retrying", len(entry.tags)
                )
                left = Left([], failed=entry.tags)
            with self._lock:
                self._pending = [e for e in self._pending if e is not entry]
                self._pending.extend(self._after(entry, left, now))

    def _after(self, entry: _Entry, left: Left, now: float) -> list[_Entry]:
        """What is left of ``entry`` after a try at ``now``: tags that met a dead Redis keep
        their pace; tags that met an unexpected error back off, or are given up."""
        found: list[_Entry] = []
        if left.tags:
            found.append(replace(entry, tags=left.tags, due=now + entry.delay))
        if left.failed:
            since = entry.failing_since if entry.failing_since is not None else now
            if now - since >= self.give_up_after:
                log.error(
                    "%d unacknowledged message(s) still not restored after %.0f s: left to the "
                    "broker's visibility sweep (%s)",
                    len(left.failed),
                    now - since,
                    ", ".join(left.failed),
                )
            else:
                delay = min(entry.delay * 2, self.max_backoff)
                found.append(_Entry(entry.qos, left.failed, delay, now + delay, since))
        return found


class Left:
    """What a try did not restore: tags it did not reach because Redis was down (``tags``),
    and tags that met an unexpected error (``failed``)."""

    def __init__(self, tags: list[str], failed: list[str] | None = None) -> None:
        self.tags = tags
        self.failed = failed or []


def restore_tags(qos: Any, tags: list[str]) -> Left:
    """Put ``tags`` back on their queues through a one-shot client; what is left to retry.

    A connection error stops the try (Redis is down: every tag not restored yet is left); an
    unexpected error on one tag leaves that tag and goes on with the others, so one message
    that cannot be restored does not hold the rest back.
    """
    channel = qos.channel
    try:
        pool = OneShotPool(**channel._connparams())
    except channel.connection_errors:
        return Left([])  # never attached: nothing to restore to (kombu's close raises the same)
    failed: list[str] = []
    try:
        client = channel.Client(connection_pool=pool)
        for index, tag in enumerate(tags):
            try:
                qos.restore_by_tag(tag, client=client)
            except channel.connection_errors:
                return Left(list(tags[index:]), failed)
            except Exception:  # noqa: BLE001 - logged, kept, retried on its own back-off
                log.exception("unacknowledged message %s not restored; retrying", tag)
                failed.append(tag)
    finally:
        pool.disconnect()
    restored = len(tags) - len(failed)
    if restored:
        log.info("restored %d unacknowledged message(s) of a lost broker connection", restored)
    return Left([], failed)


PENDING = PendingRestores()


def running_delivery_tags() -> set[str]:
    """Delivery tags of the tasks this worker is running or has handed to its pool (their
    late ack settles them).

    Handed to the pool counts as running: a request becomes active only when the main
    process reads the pool child's acknowledgement, and one written to a child's pipe in the
    last milliseconds before the loss runs there even though it is not active yet. Putting
    it back would run it twice at once; left alone, it is settled by its late ack or, if it
    never ran, by the visibility sweep.
    """
    from celery.worker import state

    requests = [*state.active_requests]
    requests += [r for r in list(state.reserved_requests) if _handed_to_pool(r)]
    tags = set()
    for request in requests:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            tags.add(tag)
    return tags


def _handed_to_pool(request: Any) -> bool:
    return getattr(request, "_apply_result", None) is not None


def _deferring_restore(original: Callable[..., Any]) -> Callable[..., Any]:
    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except self.channel.connection_errors:
            if client is None and channel_is_done(self.channel):
                running = running_delivery_tags()
                waiting = [tag for tag in self._delivered if tag not in running]
                if waiting:
                    PENDING.add(self, waiting)
                self._delivered.clear()
            raise

    return restore_unacked


def _stamping_restore(original: Callable[..., Any]) -> Callable[..., Any]:
    """A message put back on its queue (this guard, a lost worker's, the visibility sweep)
    waits from now: its publish time is what the queue's age is read from (core/queues.py),
    and the first publish's would show a queue nobody consumes the moment a worker restarts
    with a message it held (a countdown retry, an ETA)."""

    def _do_restore_message(self: Any, payload: Any, *args: Any, **kwargs: Any) -> Any:
        headers = payload.get("headers") if isinstance(payload, dict) else None
        if isinstance(headers, dict):
            headers[SENT_AT_HEADER] = time.time()
        return original(self, payload, *args, **kwargs)

    return _do_restore_message


def install_restore_guard() -> None:
    """Patch kombu's redis QoS and channel once per process (idempotent)."""
    qos = kombu_redis.QoS
    if getattr(qos, _GUARD_MARK, False):
        return
    qos.restore_unacked = _deferring_restore(qos.restore_unacked)  # type: ignore[method-assign]
    channel = kombu_redis.Channel
    channel._do_restore_message = _stamping_restore(channel._do_restore_message)  # type: ignore[method-assign]
    setattr(qos, _GUARD_MARK, True)
