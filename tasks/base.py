"""The one task decorator: explicit name, queue by name, retry policy by error kind.

Tasks stay thin: parse arguments, call one service, let retryable errors back off. Permanent
errors are not retried; they are recorded by the service as events before they surface.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from core.api.task_args import check_task_arguments, is_bound
from core.exchange.errors import Retryable
from tasks.app import app

F = TypeVar("F", bound=Callable[..., Any])


# The one "may succeed later" (network, rate limit, an opening that cannot progress yet):
# the exchange layer's class, which the services' own deferrals subclass.
__all__ = ["Retryable", "vigil_task"]


def vigil_task(
    name: str,
    *,
    retry_on: tuple[type[BaseException], ...] = (Retryable,),
    max_retries: int = 5,
    backoff_max: int = 30,
    jitter: bool = True,
    **options: Any,
) -> Callable[[F], Any]:
    """Register ``func`` as task ``name`` (a ``core.task_names`` constant; a short
    ``queue.name`` gets the ``vigil.`` prefix); the queue is the name's second part.

    The arguments are checked against ``func``'s signature and annotations on the worker,
    before ``func`` runs (core/api/task_args.py): a task sent by Flower, by hand onto the
    broker or by an older client is held to the same rule as ``vigil task`` and the API.
    A refusal (``BadTaskArguments``) is permanent, never retried.
    """

    def decorate(func: F) -> Any:
        full = name if name.startswith("vigil.") else f"vigil.{name}"

        bound = is_bound(func)

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if bound:  # bind=True: Celery passes the task itself first
                return func(args[0], **check_task_arguments(func, kwargs, full, args[1:]))
            return func(**check_task_arguments(func, kwargs, full, args))

        checked.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
        return app.task(
            name=full,
            autoretry_for=retry_on,
            retry_backoff=True,
            retry_backoff_max=backoff_max,
            retry_jitter=jitter,
            max_retries=max_retries,
            **options,
        )(checked)

    return decorate
