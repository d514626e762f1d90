"""How a ``vigil`` command reaches the system it works on: its settings, its storage, the
engine's dependencies and the Celery app.

Why one module: every command group needs the same few steps, and each must fail the same
way (one line on stderr, exit 2: a bad setting, storage unreachable). Commands that start
processes read settings through ``settings_or_exit`` (which also refuses two venues on one
URL or key); commands that work against a running system use the others. Celery and the
engine's services are imported inside the helpers, so loading a command loads neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.config import Settings, SettingsError, get_settings
from shell.cli_output import fail

if TYPE_CHECKING:
    from celery import Celery

    from core.services.deps import Deps


def settings_or_exit() -> Settings:
    from core.venues import check_venues

    try:
        settings = get_settings()
        check_venues(settings)  # two venues on one URL or key: refused before anything starts
        return settings
    except SettingsError as exc:
        raise fail(str(exc)) from None


def current_settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn 'database/Redis not there' into one line and exit code 2."""
    import redis
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise fail(f"database unreachable: {reason} (is `vigil up` running?)") from None
    except redis.RedisError as exc:
        raise fail(f"Redis unreachable: {exc} (is `vigil up` running?)") from None


def current_deps() -> Deps:
    from core.services.deps import get_deps

    current_settings()
    return get_deps()


def celery_app() -> Celery:
    from tasks.app import create_app

    celery = create_app(current_settings())
    celery.loader.import_default_modules()
    return celery


def vigil_task_names(celery: Celery) -> list[str]:
    return sorted(name for name in celery.tasks if name.startswith("vigil."))
