"""What every published task message carries: its publish time, and whether to keep its result.

Results: a task triggered by hand (Flower, ``celery -A tasks.app call``, the API's
``POST /tasks/{name}``, ``vigil task``) keeps its result for ``result_expires`` (an hour), so
whoever triggered it can read it; the thousands of tasks beat, the ingest and the workers
themselves send keep ignoring theirs (nobody reads them; storing them would fill Redis).
A sender that says which it wants (``send_task(..., ignore_result=False)``) gets it;
otherwise it is decided by the sending process: beat, workers and the ingest mark
themselves automatic when they start (``mark_automatic``); any other process that loads this
Celery app is a person's tool. ``task_ignore_result`` stays True for publishers that do not
load it.

The decision is taken before Celery sends (``ResultPolicyCelery.send_task``), not only in the
message header: Celery subscribes to a task's result channel at send time unless told to
ignore it, so an automatic sender that left it open would pay a SUBSCRIBE and an UNSUBSCRIBE
per message, and a dropped ``AsyncResult`` whose Redis has gone away would block the thread
that collects it while the result backend reconnects.

Publish time: the ``vigil_sent_at`` header, from which the API reports the age of each
queue's oldest waiting message (core/queues.py).
"""

from __future__ import annotations

import time
from typing import Any

from core.queues import SENT_AT_HEADER

_automatic = False


def mark_automatic(**_: Any) -> None:
    """This process sends tasks on its own schedule (beat, a worker, the ingest)."""
    global _automatic
    _automatic = True


def is_automatic() -> bool:
    return _automatic


def resolve_ignore_result(asked: bool | None) -> bool | None:
    """What a send without an explicit choice gets: ignored in an automatic process."""
    if asked is None and _automatic:
        return True
    return asked


def stamp_message(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: the publish time, and the result policy of this process."""
    if headers is None:
        return
    # every publish, a retry's too (Celery copies the first message's headers into it): the
    # age is how long this message has waited, not how long ago its task was first sent
    headers[SENT_AT_HEADER] = time.time()
    if headers.get("ignore_result") is None:  # a sender's explicit choice wins
        headers["ignore_result"] = _automatic


def install_publish_policy(signals: Any) -> None:
    signals.before_task_publish.connect(stamp_message, weak=False)
    signals.beat_init.connect(mark_automatic, weak=False)
    signals.worker_init.connect(mark_automatic, weak=False)
