"""The Celery application: queues, routing, delivery guarantees.

Delivery is at-least-once: ``acks_late`` plus ``task_reject_on_worker_lost`` put a task back on
its queue when the worker dies mid-run, so every task must be safe to run twice (they are:
each service re-reads state under the symbol lock and looks orders up by client id before
placing them). Redelivery loops are bounded by attempt counts kept in the database.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

from celery import Celery
from celery import signals as celery_signals
from celery.signals import worker_process_init, worker_ready
from kombu import Queue

from core import task_names as names
from core.config import Settings, get_settings
from core.endpoints import resolve_redis_url
from core.logging import install_celery_logging
from core.metrics import install_task_metrics
from core.queues import QUEUES as CORE_QUEUES
from tasks.broker_channel import install_detached_channel_guard
from tasks.broker_restore import install_restore_guard
from tasks.broker_teardown import install_teardown_guard
from tasks.json_console import install_json_console
from tasks.loop_beat import MainLoopBeat
from tasks.publish import install_publish_policy, resolve_ignore_result
from tasks.routing import price_venues_of, router_for

QUEUES = CORE_QUEUES  # named in core so the API can measure them without Celery

TASK_MODULES = [
    "tasks.maintenance",
    "tasks.orders",
    "tasks.stops",
    "tasks.alerts",
    "tasks.aged",
    "tasks.orphans",
    "tasks.guardians",
    "tasks.signals",
    "tasks.control",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    redis_url = resolve_redis_url(settings)
    transport = {
        # must exceed the longest task, or a running task is handed to a second worker
        "visibility_timeout": settings.broker_visibility_timeout,
        # a dead worker's unacked messages return within seconds of the visibility timeout
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {
            "visibility_timeout": transport["visibility_timeout"],
            # a result read or subscription during a Redis outage gives up within ~2 s instead
            # of Celery's 20 x 1 s: it can run inside a garbage collection on any thread
            "retry_policy": {
                "max_retries": 3,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        },
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "maintenance",
        # the queue a name says; a venue with queues of its own (VIGIL_VENUE_QUEUES) gets them
        "task_routes": (router_for(settings),),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        # the default for publishers that do not load this app; tasks/publish.py keeps
        # results (for result_expires) of tasks triggered by hand
        "task_ignore_result": True,
        "result_expires": 3600,
        "task_track_started": True,
        # Flower's task events, for every task but the hot price tasks (tasks/monitoring.py)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
        "broker_heartbeat": 0,
    }


class ResultPolicyCelery(Celery):
    """Celery whose sends follow tasks/publish.py's result policy before Celery subscribes,
    and send no ``task-sent`` event for the unmonitored hot tasks (tasks/monitoring.py)."""

    amqp_cls = "tasks.monitoring:UnmonitoredSentAMQP"

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:
        options["ignore_result"] = resolve_ignore_result(options.get("ignore_result"))
        return super().send_task(name, *args, **options)


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    # a lost broker must not end the worker: kombu 5.7.0 would fail restoring unacked messages
    install_detached_channel_guard()
    # ...nor leave the lost broker connection's Redis sockets open (one more set per loss)
    install_teardown_guard()
    # ...nor strand the messages it had received in Redis's unacked set until the visibility
    # timeout: they go back on their queues once Redis answers
    install_restore_guard()
    celery = ResultPolicyCelery("vigil", include=TASK_MODULES)
    celery.conf.update(celery_config(settings))
    # every worker's main loop names the messages it holds: /health's `queues` tells a
    # stalled holder from a long task by it (tasks/loop_beat.py)
    celery.steps["consumer"].add(MainLoopBeat)
    from beat_schedule import build_schedule

    celery.conf.beat_schedule = build_schedule(settings)
    return celery


app = create_app()

# every worker and beat logs through core.logging (redacted, correlation ids), and every task
# is counted and timed into the Redis-held metrics that `vigil api` serves
install_celery_logging(celery_signals)
install_task_metrics(celery_signals)
# publish time on every message (queue age in /metrics); results kept for hand-sent tasks
install_publish_policy(celery_signals)
# JSON mode: the worker's direct console lines (shutdown notices) as JSON too
install_json_console(get_settings())


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    """Each pool child gets its own database pool; a forked one would share sockets."""
    from core.db.session import reset_engine
    from core.services.deps import reset_deps

    reset_engine()
    reset_deps()
    _warm_price_threads()


def _warm_price_threads() -> None:
    """A pool process of a worker on a ``stops`` queue keeps a database connection per price
    batch thread, and makes those threads and their exchange clients now, in the background,
    not during a burst (``core.services.price_batch.warm_up``)."""
    from core.db.session import keep_connections_for
    from core.services.deps import deps_for
    from core.services.price_batch import warm_up

    settings = get_settings()
    venues = price_venues_of(app.amqp.queues.consume_from or {}, settings)
    if not venues:
        return
    keep_connections_for(settings.price_task_batch)
    for venue in venues:  # built here, once: not by the warm-up and a first task at once
        deps_for(venue)

    def warm_then_freeze() -> None:
        warm_up(venues, settings.price_task_batch)
        # What the process holds now lives as long as it does (modules, every thread's exchange
        # client with its markets): out of the collector's way. A full collection scanned it
        # all, tens of milliseconds every so often in the middle of a burst.
        gc.freeze()

    threading.Thread(target=warm_then_freeze, name="price-run-warm-up", daemon=True).start()


@worker_ready.connect
def _recover_on_start(sender: Any = None, **_: Any) -> None:
    """At worker start, resolve openings a previous crash left half-done."""
    if sender is not None:
        sender.app.send_task(names.RECOVER_INTERRUPTED_OPENINGS, kwargs={"min_age_seconds": 0})
        # the exchange may have changed while no worker ran (stops hit, positions closed or
        # opened by hand): reconcile before the first beat cycle would
        sender.app.send_task(names.RECONCILIATION)
