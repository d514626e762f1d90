"""``vigil --version``, ``vigil healthcheck`` and the one-line answer to "storage is down".

Why a separate module: these concern the command line as a whole (every command fails the
same way when PostgreSQL or Redis is not there) and the container healthchecks, not any one
operator command.

Exit codes follow shell/cli_ops.py: 0 healthy, 1 the answer is "no" (a stale heartbeat), 2 the
command could not run (storage unreachable, a bad setting).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from core.version import vigil_version

err = Console(stderr=True)
out = Console()

HEARTBEAT_COMPONENTS = ("beat", "ingest")


def one_line_error(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on exactly one line (never wrapped to the terminal width)."""
    flat = " ".join(message.split())
    err.print(f"[bold red]error:[/] {escape(flat)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# --- storage down ---------------------------------------------------------------------------


def storage_failure(exc: BaseException) -> str | None:
    """What storage is down, when ``exc`` (or anything it was raised from) says so.

    Celery, kombu and SQLAlchemy wrap the driver's connection error in their own types (a
    result backend's retry limit surfaces as a bare ``RuntimeError``), so the whole cause
    chain is searched.
    """
    import redis
    from sqlalchemy.exc import InterfaceError, OperationalError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError | InterfaceError):
            orig = current.orig
            reason = str(orig).strip().splitlines()[0] if orig else str(current).splitlines()[0]
            return f"database unreachable: {reason}"
        if isinstance(current, redis.ConnectionError | redis.TimeoutError):
            return f"Redis unreachable: {current}"
        current = current.__cause__ or current.__context__
    return None


def exchange_failure(exc: BaseException) -> str | None:
    """The exchange unreachable (network, outage, rate limit) or refusing the key."""
    from core.exchange.errors import AuthenticationFailed, Retryable

    if isinstance(exc, Retryable):
        return (
            f"exchange unreachable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
    if isinstance(exc, AuthenticationFailed):
        return f"exchange refused the API key: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@contextmanager
def storage_errors_exit() -> Iterator[None]:
    """Around a whole command: storage (or the exchange) down is one line on stderr and exit
    code 2, whichever command met it."""
    try:
        yield
    except (typer.Exit, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        reason = storage_failure(exc)
        if reason is not None:
            raise one_line_error(
                f"{reason} (is `vigil up` running, or VIGIL_DATABASE_URL / VIGIL_REDIS_URL set?)"
            ) from None
        reason = exchange_failure(exc)
        if reason is not None:
            raise one_line_error(f"{reason} (VIGIL_EXCHANGE, VIGIL_EXCHANGE_URL)") from None
        raise


def check_broker() -> None:
    """Fail in a second, not after Celery's connection retries, when Redis is not there."""
    from core.endpoints import resolve_redis_url
    from shell.runtime.stack import StartupError, check_redis

    try:
        check_redis(resolve_redis_url(), timeout=3)
    except StartupError as exc:
        raise one_line_error(f"{exc} (is `vigil up` running, or VIGIL_REDIS_URL set?)") from None


# --- version --------------------------------------------------------------------------------


def _print_version(value: bool) -> None:
    if value:
        out.print(f"vigil {vigil_version()}", highlight=False)
        raise typer.Exit(0)


def root_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """Execution and risk-management engine for crypto perpetual futures."""


# --- vigil healthcheck ----------------------------------------------------------------------


def healthcheck(
    component: Annotated[str, typer.Argument(help="beat or ingest: whose heartbeat to check.")],
    exchange: Annotated[
        str | None, typer.Option(help="The ingest's exchange (default: VIGIL_EXCHANGE's).")
    ] = None,
) -> None:
    """Exit 0 while COMPONENT's heartbeat is fresh (a container healthcheck).

    beat: the heartbeat beat schedules and a worker writes (stale after
    VIGIL_HEALTH_BEAT_STALE_SECONDS); ingest: the row ``ingest:<exchange>`` the ingest writes
    itself (stale after VIGIL_HEALTH_INGEST_STALE_SECONDS). Exit 1 stale or missing, 2 when
    the database cannot be read.
    """
    from core.config import get_settings
    from core.services.deps import exchange_name

    if component not in HEARTBEAT_COMPONENTS:
        raise one_line_error(f"component must be one of {', '.join(HEARTBEAT_COMPONENTS)}")
    settings = get_settings()
    if component == "beat":
        row, stale_after = "beat", settings.health_beat_stale_seconds
    else:
        row = f"ingest:{exchange or exchange_name(settings)}"
        stale_after = settings.health_ingest_stale_seconds
    with storage_errors_exit():
        seen = _last_seen(row)
    if seen is None:
        raise one_line_error(f"{row}: no heartbeat recorded", 1)
    from core.clock import SYSTEM_CLOCK

    age = (SYSTEM_CLOCK.now() - seen).total_seconds()
    if age > stale_after:
        raise one_line_error(f"{row}: heartbeat {age:.0f}s old (stale after {stale_after:.0f}s)", 1)
    out.print(f"{row}: heartbeat {age:.0f}s old", highlight=False)


def _last_seen(row: str) -> datetime | None:
    from core.db.session import new_session
    from core.services import heartbeat

    with new_session() as session:
        return heartbeat.last_seen(session).get(row)


def register(app: typer.Typer) -> None:
    """Add ``--version`` and ``healthcheck`` to the ``vigil`` app."""
    app.callback()(root_options)
    app.command("healthcheck")(healthcheck)


def run_with_storage_errors(app: typer.Typer) -> None:
    """Run the CLI; any command that meets a down PostgreSQL or Redis exits 2 with one line."""
    try:
        with storage_errors_exit():
            app()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
