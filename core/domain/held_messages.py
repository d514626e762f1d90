"""Which received messages sit with a worker that stopped: the decision, without I/O.

With ``acks_late`` and a prefetch of one, a worker takes a message off its queue before it
runs the task, and the message stays in the broker's unacknowledged set (kombu's ``unacked``
hash and ``unacked_index`` zset, stamped with the time it was received) until the task ends.
A worker that is alive but stopped (SIGSTOP, a main loop stuck) while others consume the same
queues keeps the queues moving, so their waiting ages say nothing; its message waits for the
visibility timeout (300 s) and nobody is told.

Why not the message's age alone: every running task holds its message the same way, and a
legitimate task may run for minutes (an opening waits for its fills). Why not Celery's
broadcast ping or ``inspect``: its replies can stay lost after a Redis restart while tasks
run normally (the ``workers`` component falls back to heartbeats for that reason), which
would make every held message look orphaned. Why not the task's own duration bounds: the
hard time limit (180 s) is enforced by the very main loop that stalled, and would page only
near the visibility timeout anyway.

What is used instead: each worker's main loop writes, every couple of seconds, the delivery
tags of every message it holds (running, handed to its pool, waiting for a slot or an ETA;
tasks/loop_beat.py). The beat is driven by the loop itself, so a SIGSTOP or a loop stuck in
one call silences it, while a task running for an hour in a pool process does not. A message
held longer than the bound that no worker with a fresh beat claims is held by a stalled (or
dead) worker. The time a message is held counts from its receipt, or from its ETA when that
is later: a countdown retry waits with its worker on purpose.

After a Redis restart no worker could beat while it was down, and each reconnects on its own
backoff (kombu waits up to 30 s between two tries): a message received before the broker
started is not called stalled until ``stall_after`` plus that longest wait has passed since
the start, unless a fresh beat claims it sooner. ``redis`` itself fails while it is down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BROKER_RECONNECT_SECONDS = 30.0  # kombu's longest wait between two reconnect tries


@dataclass(frozen=True)
class HeldMessage:
    """A message a worker received and has not acknowledged."""

    tag: str  # kombu's delivery tag
    queue: str
    task: str | None
    task_id: str | None
    held_since: float  # epoch s: its receipt by a worker, or its ETA if later


@dataclass(frozen=True)
class LoopBeat:
    """The last beat of one worker's main loop: when, and which messages it held then."""

    worker: str
    at: float  # epoch s
    tags: frozenset[str]


@dataclass(frozen=True)
class StalledHold:
    """A message held past the bound by no worker whose loop still beats."""

    message: HeldMessage
    held_seconds: float
    worker: str | None  # the worker whose last beat listed it; None when no beat ever did
    worker_silent_seconds: float | None  # since that worker's last beat


def stalled_holds(
    held: Iterable[HeldMessage],
    beats: Iterable[LoopBeat],
    now: float,
    stall_after: float,
    broker_started_at: float | None = None,
) -> list[StalledHold]:
    """The messages held longer than ``stall_after`` s that no fresh beat claims, the
    longest held first.

    A beat is fresh when it is at most ``stall_after`` s old. A message held that long by a
    live worker was received before that worker's latest beat, so the beat lists it: no
    race between a receipt and the next beat can make a live holder look stalled. A message
    received before the broker's last start (``broker_started_at``, epoch s) waits for its
    worker's reconnection first (module doc).
    """
    reconnecting = broker_started_at is not None and (
        now - broker_started_at <= stall_after + BROKER_RECONNECT_SECONDS
    )
    beats = list(beats)
    claimed: set[str] = set()
    for beat in beats:
        if now - beat.at <= stall_after:
            claimed |= beat.tags
    stalled = []
    for message in held:
        held_for = now - message.held_since
        if held_for <= stall_after or message.tag in claimed:
            continue
        if reconnecting and message.held_since < (broker_started_at or 0.0):
            continue  # its worker may not have been able to beat since
        listed = [beat for beat in beats if message.tag in beat.tags]
        last = max(listed, key=lambda beat: beat.at, default=None)
        stalled.append(
            StalledHold(
                message,
                held_for,
                last.worker if last else None,
                now - last.at if last else None,
            )
        )
    return sorted(stalled, key=lambda hold: -hold.held_seconds)
