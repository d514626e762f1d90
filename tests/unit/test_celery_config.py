from beat_schedule import build_schedule
from core.config import load_settings
from tasks.app import QUEUES, celery_config, create_app


def test_delivery_is_at_least_once_with_one_message_in_flight_per_process():
    conf = celery_config(load_settings())
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_serializer"] == "json"


def test_visibility_timeout_outlasts_the_longest_task():
    s = load_settings()
    conf = celery_config(s)
    assert conf["broker_transport_options"]["visibility_timeout"] > s.task_time_limit
    assert conf["task_time_limit"] > conf["task_soft_time_limit"]


def test_every_queue_is_declared_and_routed_by_task_name():
    app = create_app(load_settings())
    declared = {q.name for q in app.conf.task_queues}
    assert declared == set(QUEUES)
    app.loader.import_default_modules()
    (router,) = app.conf.task_routes
    names = [name for name in app.tasks if name.startswith("vigil.")]
    routed = set()
    for name in names:  # each task to the queue its name says (no venue has queues of its own)
        queue = router(name, [], {}, {})["queue"]
        assert queue == name.split(".")[1], name
        routed.add(queue)
    assert routed == set(QUEUES)


def test_beat_entries_expire_at_one_and_a_half_intervals(monkeypatch):
    monkeypatch.setenv("VIGIL_HEARTBEAT_INTERVAL", "20")
    schedule = build_schedule(load_settings())
    assert schedule["heartbeat"]["schedule"] == 20
    assert schedule["heartbeat"]["options"]["expires"] == 30


def test_every_scheduled_task_is_registered():
    app = create_app(load_settings())
    app.loader.import_default_modules()
    import tasks.maintenance  # noqa: F401

    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks
