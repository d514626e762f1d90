"""``vigil db upgrade | downgrade | current``: the database schema (alembic migrations).

Why apart: the schema is changed only through migrations (core/db/migrations); these
commands apply or revert them against the configured database, or the embedded one a
``vigil up`` on this machine started.
"""

from __future__ import annotations

from typing import Annotated

import typer

from shell.cli_output import console, fail
from shell.cli_running import settings_or_exit

db_app = typer.Typer(help="Database schema (alembic migrations).", no_args_is_help=True)


def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from core.db import migrate
    from core.endpoints import resolve_database_url
    from shell.runtime.stack import StartupError, check_database

    url = resolve_database_url(settings_or_exit())
    try:
        check_database(url)
    except StartupError as exc:
        raise fail(f"{exc} (is `vigil up` running, or VIGIL_DATABASE_URL set?)") from None
    migrate.upgrade(url, revision)
    console.print(f"schema at {migrate.current_revision(url)}")


def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from core.db import migrate
    from core.endpoints import resolve_database_url

    url = resolve_database_url(settings_or_exit())
    migrate.downgrade(url, revision)
    console.print(f"schema at {migrate.current_revision(url) or 'base'}")


def db_current() -> None:
    """Show the schema's revision and the code's newest one."""
    from core.db import migrate
    from core.endpoints import resolve_database_url

    url = resolve_database_url(settings_or_exit())
    console.print(f"database: {migrate.current_revision(url)}  code: {migrate.head_revision(url)}")


def register(app: typer.Typer) -> None:
    """Add the ``db`` group to the ``vigil`` app."""
    db_app.command("upgrade")(db_upgrade)
    db_app.command("downgrade")(db_downgrade)
    db_app.command("current")(db_current)
    app.add_typer(db_app, name="db")
