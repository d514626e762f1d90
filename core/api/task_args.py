"""Task keyword arguments checked against the task's own signature, before anything runs.

One check for every way a task can be sent: ``vigil task``, ``POST /tasks/<name>`` and the
task layer itself (``tasks/base.py`` runs it on the worker, so a task sent through Flower or
straight onto the broker is held to the same rule). Why: a task given an argument it does
not take, or a text where it expects a position id, used to be accepted at the door and
fail later on a worker with a ``TypeError`` nobody sees; here it is refused with the reason.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError


class BadTaskArguments(ValueError):
    """The arguments do not fit the task's signature; the message says how."""


@lru_cache(maxsize=256)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


@lru_cache(maxsize=256)
def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(inspect.unwrap(func))
    except (NameError, TypeError):
        return {}


@lru_cache(maxsize=256)
def sender_signature(func: Callable[..., Any]) -> inspect.Signature:
    """The arguments a sender gives: a bound task's ``self`` is Celery's to pass, not theirs."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if params and params[0].name == "self":
        return signature.replace(parameters=params[1:])
    return signature


def is_bound(func: Callable[..., Any]) -> bool:
    """A task declared with ``bind=True`` (its first parameter is ``self``)."""
    return next(iter(inspect.signature(func).parameters), None) == "self"


def check_task_arguments(
    func: Callable[..., Any],
    kwargs: Mapping[str, Any],
    name: str | None = None,
    args: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """The keyword arguments, validated (and coerced: ``"5"`` for an ``int``) per annotation.

    Raises BadTaskArguments naming the task, its parameters and what is wrong: an unknown
    or missing argument, or a value of the wrong type.
    """
    signature = sender_signature(func)
    label = f"{name or getattr(func, '__name__', 'task')}({', '.join(signature.parameters)})"
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise BadTaskArguments(f"{label}: {exc}") from None
    hints = _hints(func)
    checked: dict[str, Any] = {}
    for key, value in bound.arguments.items():
        annotation = hints.get(key)
        if annotation is None or annotation is Any:
            checked[key] = value
            continue
        try:
            checked[key] = _adapter(annotation).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0].get("msg", "invalid value")
            raise BadTaskArguments(f"{label}: {key}={value!r:.80}: {reason}") from None
    return checked
