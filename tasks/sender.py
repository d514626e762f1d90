"""Queue tasks by name from outside a worker (the ingest, benchmarks): the Celery side of
``core.ingest.context.Enqueue``, so the engine in ``core/`` never imports Celery."""

from __future__ import annotations

from collections.abc import Sequence

from core.config import Settings
from core.ingest.context import Enqueue, EnqueueFailed
from tasks.app import create_app
from tasks.publish import mark_automatic


def celery_sender(settings: Settings) -> Enqueue:
    """Send by task name through a Celery app built from ``settings``.

    Any broker error (kombu, redis, a socket) becomes ``EnqueueFailed``: the ingest keeps
    the work (a wave stays due, a price window stays pending) and tries again, instead of
    its stream dying with the broker.
    """
    app = create_app(settings)
    mark_automatic()  # the ingest's waves and price windows: nobody reads their results

    def send(name: str, args: Sequence[object]) -> None:
        try:
            app.send_task(name, args=list(args))
        except Exception as exc:  # noqa: BLE001 - the broker's many kinds become one
            raise EnqueueFailed(f"{name}{tuple(args)}: {exc}") from exc

    return send
