"""Start-up's Redis check waits while a restarted Redis loads its dataset (it answers
``LOADING`` then), and still refuses at once a Redis that does not answer."""

import pytest
import redis

from shell.runtime import stack


class _Redis:
    def __init__(self, answers):
        self.answers = list(answers)
        self.pings = 0

    def ping(self):
        self.pings += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _serve(monkeypatch, fake):
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: fake))
    monkeypatch.setattr(stack.time, "sleep", lambda s: None)


def test_a_redis_loading_its_dataset_is_waited_for(monkeypatch):
    loading = redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")
    fake = _Redis([loading, loading, loading, True])
    _serve(monkeypatch, fake)
    stack.check_redis("redis://127.0.0.1:1/0")
    assert fake.pings == 4


def test_a_redis_still_loading_after_the_wait_is_named_as_loading(monkeypatch):
    loading = redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")
    _serve(monkeypatch, _Redis([loading] * 3))
    with pytest.raises(stack.StartupError, match="still loading"):
        stack.check_redis("redis://127.0.0.1:1/0", loading_wait=0)


def test_a_redis_that_refuses_is_unreachable_at_once(monkeypatch):
    fake = _Redis([redis.exceptions.ConnectionError("Connection refused"), True])
    _serve(monkeypatch, fake)
    with pytest.raises(stack.StartupError, match="unreachable"):
        stack.check_redis("redis://127.0.0.1:1/0")
    assert fake.pings == 1
