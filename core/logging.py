"""Logging for every vigil process: one setup, a correlation id on each line, secrets redacted.

Why one function: the CLI, Celery workers and beat (through Celery's ``setup_logging``
signal), the ingest, the API and the paper exchange all log through the same handler, so an
operator greps one format and a position's whole life shares one ``correlation_id``.

Why the redaction sits in the formatter: it sees the final text of every record, from any
logger (ccxt's own debug log prints request headers, which carry the API key), including
exception tracebacks, so nothing reaches the output unredacted, whatever the caller logged.

Usage in services::

    with bind_correlation(position.correlation_id, position_id=position.id):
        ...  # every log line in here carries both ids
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

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


class CorrelationFilter(logging.Filter):
    """Put the bound correlation and position ids on the record (``-`` when unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation.get() or "-"
        position_id = _position.get()
        record.position_id = "-" if position_id is None else position_id
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, correlation_id, position_id, ..."""

    def __init__(self, component: str | None = None) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        _ensure_context(record)
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": _redactor(record.getMessage()),
            "correlation_id": _unset(getattr(record, "correlation_id", "-")),
            "position_id": _unset(getattr(record, "position_id", "-")),
            "process": record.process,
        }
        if self.component:
            payload["component"] = self.component
        if record.exc_info:
            payload["exc"] = _redactor(self.formatException(record.exc_info))
        if record.stack_info:
            payload["stack"] = _redactor(self.formatStack(record.stack_info))
        return json.dumps(payload, default=str)


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
    """Make Celery (worker and beat) log through ``setup_logging`` instead of its own setup.

    ``signals`` is ``celery.signals``, passed in so that core never imports Celery. A
    receiver on ``setup_logging`` tells Celery to leave logging to us.
    """

    def _setup(**_: Any) -> None:
        setup_logging(component=component or ("beat" if "beat" in sys.argv else "worker"))

    signals.setup_logging.connect(_setup, weak=False)
