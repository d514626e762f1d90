"""The restore guard: a restore that met a dead Redis is retried until Redis answers."""

import time
from types import SimpleNamespace

import pytest
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tasks import broker_restore
from tasks.broker_restore import PendingRestores, _deferring_restore, install_restore_guard


class _QoS:
    def __init__(self, down: int, done: bool = True) -> None:
        self.down = down  # restores that meet a dead Redis before one succeeds
        self.restored: list[str] = []
        self._delivered = {"t1": 1, "t2": 2}
        self.channel = SimpleNamespace(
            connection_errors=(RedisConnectionError,),
            closed=done,
            _closing=False,
            connection=SimpleNamespace(client=None if done else object()),
            _connparams=lambda: {"host": "127.0.0.1", "port": 1},
            Client=lambda connection_pool: "client",
        )

    def restore_by_tag(self, tag, client=None):  # noqa: ANN001, ANN201
        if self.down:
            self.down -= 1
            raise RedisConnectionError("refused")
        self.restored.append(tag)


def test_a_pending_restore_is_retried_until_redis_answers():
    pending = PendingRestores(retry_seconds=0.01)
    qos = _QoS(down=3)
    pending.add(qos, ["t1", "t2"])
    deadline = time.monotonic() + 10
    while pending.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert qos.restored == ["t1", "t2"] and pending.pending() == 0


def _until_settled(pending: PendingRestores) -> None:
    deadline = time.monotonic() + 10  # only to fail instead of hanging
    while pending.pending() and time.monotonic() < deadline:
        time.sleep(0.01)


class _QoSWithABadMoment(_QoS):
    """Redis answers, but the first restore of ``t1`` meets an error that is no connection's."""

    def __init__(self) -> None:
        super().__init__(down=0)
        self.surprises = 1

    def restore_by_tag(self, tag, client=None):  # noqa: ANN001, ANN201
        if tag == "t1" and self.surprises:
            self.surprises -= 1
            raise RuntimeError("unforeseen")
        super().restore_by_tag(tag, client)


def test_an_unexpected_restore_error_keeps_the_tag_for_the_next_try():
    pending = PendingRestores(retry_seconds=0.01, max_backoff=0.05)
    qos = _QoSWithABadMoment()
    pending.add(qos, ["t1", "t2"])
    _until_settled(pending)
    # the other tag was not held back, and the one that failed was tried again
    assert qos.restored == ["t2", "t1"] and pending.pending() == 0


def test_the_restore_thread_survives_an_error_outside_the_restore_itself():
    pending = PendingRestores(retry_seconds=0.01, max_backoff=0.05)
    qos = _QoS(down=0)
    calls = []

    def connparams() -> dict[str, object]:
        calls.append(1)
        if len(calls) == 1:
            raise AttributeError("'NoneType' object has no attribute 'connection_errors'")
        return {"host": "127.0.0.1", "port": 1}

    qos.channel._connparams = connparams
    pending.add(qos, ["t1", "t2"])
    _until_settled(pending)
    assert len(calls) >= 2 and qos.restored == ["t1", "t2"] and pending.pending() == 0


class _QoSThatCannot(_QoS):
    """Redis answers, but every restore of ``stuck`` meets an error that is no connection's."""

    def __init__(self, stuck: str) -> None:
        super().__init__(down=0)
        self.stuck = stuck
        self.tries = 0

    def restore_by_tag(self, tag, client=None):  # noqa: ANN001, ANN201
        if tag == self.stuck:
            self.tries += 1
            raise RuntimeError("unforeseen")
        super().restore_by_tag(tag, client)


def _tries_at(pending: PendingRestores, moments: list[float]) -> list[tuple[float, float]]:
    """Run the retry loop's tries at the given moments (no thread, no clock): each entry's
    (delay, due) after each."""
    seen = []
    for now in moments:
        pending._try_due(now)
        seen += [(entry.delay, entry.due) for entry in pending._pending]
    return seen


def test_unexpected_errors_back_off_up_to_the_bound():
    pending = PendingRestores(retry_seconds=1, max_backoff=4, give_up_after=1000)
    qos = _QoSThatCannot("t1")
    pending._queue(qos, ["t1"], now=0)
    # tried when due: 1, 3, 7, 11, 15 (waits 2, 4, 4, 4: doubling up to the bound)
    seen = _tries_at(pending, [1, 2, 3, 5, 7, 11, 15])
    assert [d for d, _ in seen] == [2, 2, 4, 4, 4, 4, 4]
    assert qos.tries == 5 and pending.pending() == 1


def test_a_message_that_cannot_be_restored_does_not_slow_the_others():
    """Its back-off is its own: messages of a later broker loss keep the 1 s pace."""
    pending = PendingRestores(retry_seconds=1, max_backoff=30, give_up_after=1000)
    stuck = _QoSThatCannot("bad")
    pending._queue(stuck, ["bad"], now=0)
    _tries_at(pending, [1, 3, 7, 15])  # backed off to 16 s: next try at 31
    later = _QoS(down=2)  # a later loss: Redis down for two more tries
    pending._queue(later, ["t1", "t2"], now=15)
    _tries_at(pending, [16, 17, 18])
    assert later.restored == ["t1", "t2"]
    assert stuck.tries == 4 and pending.pending() == 1  # only the stuck one is left


def test_a_message_failing_past_the_limit_is_left_to_the_visibility_sweep(caplog):
    pending = PendingRestores(retry_seconds=1, max_backoff=2, give_up_after=10)
    qos = _QoSThatCannot("t1")
    pending._queue(qos, ["t1", "t2"], now=0)
    _tries_at(pending, [1, 3, 5, 7, 9, 11, 13, 15])
    assert qos.restored == ["t2"] and pending.pending() == 0
    assert qos.tries == 6  # at 1, 3, 5, 7, 9 and 11, which is 10 s after its first failure
    assert "left to the broker's visibility sweep" in caplog.text and "t1" in caplog.text


def _failing_restore(self, client=None):  # noqa: ANN001, ANN202 - kombu's signature
    raise RedisConnectionError("refused")


def test_a_failed_restore_on_a_done_channel_is_handed_over_and_still_raises(monkeypatch):
    handed = []
    monkeypatch.setattr(broker_restore.PENDING, "add", lambda qos, tags: handed.append(tags))
    qos = _QoS(down=0)
    with pytest.raises(RedisConnectionError):  # the close ignores it, as before
        _deferring_restore(_failing_restore)(qos)
    assert handed == [["t1", "t2"]] and qos._delivered == {}


def test_the_messages_of_running_tasks_are_left_to_their_late_acks(monkeypatch):
    handed = []
    monkeypatch.setattr(broker_restore.PENDING, "add", lambda qos, tags: handed.append(tags))
    monkeypatch.setattr(broker_restore, "running_delivery_tags", lambda: {"t1"})
    qos = _QoS(down=0)
    with pytest.raises(RedisConnectionError):
        _deferring_restore(_failing_restore)(qos)
    assert handed == [["t2"]]


def test_a_live_channel_keeps_kombus_behaviour(monkeypatch):
    handed = []
    monkeypatch.setattr(broker_restore.PENDING, "add", lambda qos, tags: handed.append(tags))
    qos = _QoS(down=0, done=False)
    with pytest.raises(RedisConnectionError):
        _deferring_restore(_failing_restore)(qos)
    assert handed == [] and qos._delivered == {"t1": 1, "t2": 2}


def test_installed_once_on_kombus_redis_qos():
    install_restore_guard()
    installed = kombu_redis.QoS.restore_unacked
    install_restore_guard()
    assert kombu_redis.QoS.restore_unacked is installed


def test_a_request_handed_to_the_pool_counts_as_running(monkeypatch):
    """Active only once the pool child acknowledges; one written to its pipe runs anyway."""
    import weakref

    from celery.worker import state

    class Request:  # the parts of celery's Request the guard reads
        def __init__(self, tag: str, handed: bool) -> None:
            self.message = SimpleNamespace(delivery_tag=tag)
            self._apply_result = weakref.ref(self) if handed else None

    active, handed, waiting = Request("a", True), Request("h", True), Request("w", False)
    monkeypatch.setattr(state, "active_requests", weakref.WeakSet([active]))
    monkeypatch.setattr(state, "reserved_requests", weakref.WeakSet([active, handed, waiting]))
    assert broker_restore.running_delivery_tags() == {"a", "h"}
