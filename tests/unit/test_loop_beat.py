"""The worker's main-loop beat (tasks/loop_beat.py): what it names, and that it never raises."""

import json
import weakref
from types import SimpleNamespace

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.config import Settings
from tasks import loop_beat
from tasks.loop_beat import BeatWriter, MainLoopBeat, beat_interval, held_delivery_tags


def test_several_beats_per_bound_and_never_slower_than_two_seconds():
    assert beat_interval(Settings(health_holder_stall_seconds=30)) == 2.0
    assert beat_interval(Settings(health_holder_stall_seconds=3)) == 0.5


def test_every_request_the_worker_holds_is_named(monkeypatch):
    from celery.worker import state

    class Request:
        def __init__(self, tag: str) -> None:
            self.message = SimpleNamespace(delivery_tag=tag)

    running, reserved, eta = Request("r"), Request("w"), Request("e")
    monkeypatch.setattr(state, "active_requests", weakref.WeakSet([running]))
    monkeypatch.setattr(state, "reserved_requests", weakref.WeakSet([running, reserved]))
    monkeypatch.setattr(state, "scheduled_requests", weakref.WeakSet([eta]))
    assert held_delivery_tags() == ["e", "r", "w"]


def test_a_beat_that_cannot_reach_redis_is_skipped_without_raising():
    down = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    BeatWriter("w@h", down).write()  # inside the worker's loop: must not raise
    BeatWriter("w@h", down).prune()


def test_a_beat_names_the_worker_redis_time_and_its_tags(monkeypatch, redis_client):
    """Stamped by Redis's clock, not the worker host's (the reader times it by Redis too)."""
    monkeypatch.setattr(loop_beat, "held_delivery_tags", lambda: ["t1"])
    monkeypatch.setattr(loop_beat.time, "time", lambda: 0.0)  # a worker clock far off
    redis_client.delete("vigil:worker-loops")
    BeatWriter("w@h", redis_client).write()
    beat = json.loads(redis_client.hget("vigil:worker-loops", "w@h"))
    assert beat["tags"] == ["t1"] and beat["pid"] > 0
    assert abs(beat["at"] - loop_beat.redis_now(redis_client)) < 5


def test_a_beat_whose_tags_could_not_be_read_keeps_the_last_one(monkeypatch, redis_client):
    redis_client.delete("vigil:worker-loops")
    monkeypatch.setattr(loop_beat, "held_delivery_tags", lambda: ["t1"])
    BeatWriter("w@h", redis_client).write()
    monkeypatch.setattr(loop_beat, "held_delivery_tags", lambda: None)
    BeatWriter("w@h", redis_client).write()
    assert json.loads(redis_client.hget("vigil:worker-loops", "w@h"))["tags"] == ["t1"]


def test_every_worker_of_the_app_runs_the_beat():
    from tasks.app import app

    assert MainLoopBeat in app.steps["consumer"]


def test_a_thread_beat_ends_when_told_or_after_its_time():
    import threading
    import time

    beats: list[float] = []
    writer = SimpleNamespace(write=lambda: beats.append(time.monotonic()))
    stop = threading.Event()
    loop_beat._beat_until(writer, 0.01, stop, 0.05)  # returns by itself: bounded
    assert beats
    stop.set()
    beats.clear()
    loop_beat._beat_until(writer, 0.01, stop, None)  # told to stop: no beat at all
    assert beats == []
