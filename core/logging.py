"""Logging for every vigil process: one setup, a correlation id on each line, secrets redacted.

Why one function: the CLI, Celery workers and beat (through Celery's ``setup_logging``
signal), the ingest, the API and the paper exchange all log through the same handler, so an
operator greps one format and a position's whole life shares one ``correlation_id``.

Why the redaction sits in the formatter: it sees the final text of every record, from any
logger (ccxt's own debug log prints request headers, which carry the API key), including
exception tracebacks, so nothing reaches the output unredacted, whatever the caller logged.

JSON mode (``VIGIL_LOG_JSON=true``) is python-json-logger's formatter: one object per line with
``ts, level, logger, msg, component, process, correlation_id, position_id, task_id, task_name``
plus every ``extra=`` field the caller passed; every string in it goes through redaction.
Celery's start-up banner is switched off in JSON mode (shell/cli.py), so every line of every
process parses.

Usage in services::

    with bind_correlation(position.correlation_id, position_id=position.id):
        ...  # every log line in here carries both ids
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

from core.config import Settings

REDACTED = "***"
# A configured secret shorter than this is not replaced literally (the public paper key
# "paper" would otherwise mangle every mention of the paper exchange); the patterns below
# still catch it in headers, URLs and key=value pairs.
MIN_LITERAL_SECRET = 6

_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Authorization: Bearer <token>  /  'Authorization': 'Bearer <token>'
    re.compile(r"(?i)(bearer\s+)[^\s'\",;}]+"),
    # exchange key headers as ccxt logs them: {'X-MBX-APIKEY': '...'} / X-BAPI-API-KEY: ...
    re.compile(
        r"(?i)((?:x-mbx-apikey|x-bapi-api-key|x-bapi-sign|api[-_]?key)['\"]?\s*[:=]\s*['\"]?)"
        r"[^\s'\",&}]+"
    ),
    # secrets and signatures as key=value / "key": "value"
    re.compile(
        r"(?i)((?:secret|password|passwd|signature|token)['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
    ),
    # user:password@ in URLs
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)"),
    # Telegram bot tokens inside Bot API URLs: /bot<id>:<secret>/
    re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"),
)

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vigil_correlation_id", default=None
)
_position: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "vigil_position_id", default=None
)
_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "vigil_task", default=None
)


# --- correlation ----------------------------------------------------------------------------


@contextmanager
def bind_correlation(
    correlation_id: str | None, *, position_id: int | None = None
) -> Iterator[None]:
    """Tag every log line inside the block with a position's correlation id (and id).

    Nestable and safe across threads and asyncio tasks (contextvars); the previous values
    come back when the block ends, however it ends.
    """
    token_c = _correlation.set(correlation_id)
    token_p = _position.set(position_id)
    try:
        yield
    finally:
        _position.reset(token_p)
        _correlation.reset(token_c)


def current_correlation() -> tuple[str | None, int | None]:
    """The (correlation id, position id) bound in this context, if any."""
    return _correlation.get(), _position.get()


def bind_task(task_id: str, task_name: str) -> contextvars.Token[tuple[str, str] | None]:
    """Tag log lines with the running task (Celery's task_prerun); undo with ``unbind_task``."""
    return _task.set((task_id, task_name))


def unbind_task(token: contextvars.Token[tuple[str, str] | None] | None = None) -> None:
    if token is not None:
        _task.reset(token)
    else:
        _task.set(None)


class CorrelationFilter(logging.Filter):
    """Put the bound correlation, position and task ids on the record (``-`` when unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation.get() or "-"
        position_id = _position.get()
        record.position_id = "-" if position_id is None else position_id
        task = _task.get()
        record.task_id, record.task_name = task if task is not None else ("-", "-")
        return True


# --- redaction ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redactor:
    """Replaces configured secrets and secret-shaped substrings with ``***``."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings | None, extra: Iterable[str] = ()) -> Redactor:
        return cls(tuple(sorted(set(secret_values(settings)) | set(extra), key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= MIN_LITERAL_SECRET and secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_groups, text)
        return text


def _keep_groups(match: re.Match[str]) -> str:
    groups = match.groups()
    if len(groups) == 2:
        return f"{groups[0]}{REDACTED}{groups[1]}"
    return f"{groups[0]}{REDACTED}"


def secret_values(settings: Settings | None) -> list[str]:
    """Every secret the settings hold (keys, tokens, passwords, secret URLs)."""
    if settings is None:
        return []
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            secret = value.get_secret_value()
            if secret:
                values.append(str(secret))
    return values


_redactor = Redactor()


def redact(text: str) -> str:
    """Redact with the secrets of the last ``setup_logging`` (for error texts stored in rows)."""
    return _redactor(text)


def set_redactor(redactor: Redactor) -> None:
    global _redactor
    _redactor = redactor


# --- formatters -----------------------------------------------------------------------------

PLAIN_FORMAT = (
    "%(asctime)s %(levelname)-7s %(name)s [%(correlation_id)s/%(position_id)s] %(message)s"
)


class RedactingFormatter(logging.Formatter):
    """Plain text lines; the whole rendered line, traceback included, goes through redaction."""

    def format(self, record: logging.LogRecord) -> str:
        _ensure_context(record)
        return _redactor(super().format(record))


CONTEXT_FIELDS = ("correlation_id", "position_id", "task_id", "task_name")


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per line: ts, level, logger, msg, component, process, the context ids,
    every ``extra=`` field; tracebacks under ``exc``. Every string value is redacted."""

    def __init__(self, component: str | None = None) -> None:
        super().__init__(
            ["levelname", "name", "message", "process"],
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "exc_info": "exc",
                "stack_info": "stack",
            },
            static_fields={"component": component} if component else {},
            timestamp="ts",
        )
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        _ensure_context(record)
        return super().format(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for name in CONTEXT_FIELDS:
            log_data[name] = _unset(log_data.get(name, "-"))
        return {key: _redact_value(value) for key, value in log_data.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redactor(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _unset(value: Any) -> Any:
    return None if value == "-" else value


def _ensure_context(record: logging.LogRecord) -> None:
    """Records that bypassed the handler's filter (e.g. formatted directly) still get ids."""
    if not hasattr(record, "correlation_id"):
        CorrelationFilter().filter(record)


# --- setup ----------------------------------------------------------------------------------

_HANDLER_NAME = "vigil"


def setup_logging(
    settings: Settings | None = None,
    *,
    component: str | None = None,
    stream: TextIO | None = None,
    level: str | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Configure the root logger for this process; calling it again replaces the setup.

    ``component`` names the process in JSON lines (worker, beat, api, ingest, cli, sim).
    Level and format come from ``VIGIL_LOG_LEVEL`` / ``VIGIL_LOG_JSON`` unless given.
    """
    if settings is None:
        from core.config import get_settings

        settings = get_settings()
    set_redactor(Redactor.from_settings(settings))
    use_json = settings.log_json if json_lines is None else json_lines
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(JsonFormatter(component) if use_json else RedactingFormatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(level or settings.log_level)
    # ccxt's DEBUG log prints every request with its headers; keep it at INFO unless the
    # operator explicitly turns on DEBUG (it is redacted either way)
    if (level or settings.log_level) != "DEBUG":
        logging.getLogger("ccxt").setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


def install_celery_logging(signals: Any, component: str | None = None) -> None:
    """Make Celery (worker and beat) log through ``setup_logging`` instead of its own setup,
    each line inside a task tagged with the task's id and name.

    ``signals`` is ``celery.signals``, passed in so that core never imports Celery. A
    receiver on ``setup_logging`` tells Celery to leave logging to us.
    """

    def _setup(**_: Any) -> None:
        setup_logging(component=component or ("beat" if "beat" in sys.argv else "worker"))

    def _task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        bind_task(task_id or "-", getattr(task, "name", None) or "-")

    def _task_done(**_: Any) -> None:
        unbind_task()

    signals.setup_logging.connect(_setup, weak=False)
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_done, weak=False)
