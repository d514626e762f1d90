"""A waiting message's age is how long this message has waited: a retry's publish is
stamped anew, and a message put back on its queue (a lost worker's, the visibility sweep's)
waits from its restore, not from its first publish (it would look stale the moment a worker
restarts with a message it held)."""

from __future__ import annotations

import time

from kombu.transport import redis as kombu_redis

from core.queues import SENT_AT_HEADER
from tasks.broker_restore import install_restore_guard
from tasks.publish import stamp_message


def test_every_publish_is_stamped_a_retry_too():
    headers = {SENT_AT_HEADER: time.time() - 600}  # copied from the task's first message
    before = time.time()
    stamp_message(headers=headers)
    assert headers[SENT_AT_HEADER] >= before


def test_a_restored_message_waits_from_its_restore(monkeypatch):
    install_restore_guard()
    pushed = []
    channel = object.__new__(kombu_redis.Channel)
    monkeypatch.setattr(channel, "_lookup", lambda exchange, key: ["stops"], raising=False)
    monkeypatch.setattr(channel, "_get_message_priority", lambda p, reverse=False: 0, raising=False)
    monkeypatch.setattr(channel, "_q_for_pri", lambda queue, pri: queue, raising=False)
    payload = {
        "headers": {SENT_AT_HEADER: time.time() - 600},
        "properties": {"delivery_info": {}},
    }

    class Pipe:
        def lpush(self, queue, body):
            pushed.append((queue, body))

        rpush = lpush

    before = time.time()
    kombu_redis.Channel._do_restore_message(channel, payload, "", "stops", Pipe())
    assert pushed and pushed[0][0] == "stops"
    assert payload["headers"][SENT_AT_HEADER] >= before and payload["headers"]["redelivered"]
