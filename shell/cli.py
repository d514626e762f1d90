"""The ``vigil`` command line.

This module is the composition root of the process shell: it reaches the Celery app
(``tasks``) and the paper exchange (``sim``) through imports inside the command that needs
them, so starting one command never loads what another needs. The engine (``core``) imports
neither, nor anything of the shell.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from core.config import SettingsError, get_settings
from shell import cli_db, cli_processes, cli_system
from shell.cli_control import register as _register_control_commands
from shell.cli_meta import register as _register_meta
from shell.cli_meta import run_with_storage_errors
from shell.cli_ops import register as _register_operator_commands
from shell.cli_output import err
from shell.cli_settings import register as _register_settings_commands

app = typer.Typer(
    name="vigil",
    help="Execution and risk-management engine for crypto perpetual futures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# the whole system (up, demo, chaos), then its processes one by one (worker, beat, flower,
# sim, signal-sim, ingest), then the database schema (db)
cli_system.register(app)
cli_processes.register(app)
cli_db.register(app)
# operator commands (task, diagnose, cleanup, events, reproduce-duplicates, api)
_register_operator_commands(app)
_register_control_commands(app)
_register_settings_commands(app)
# --version, healthcheck, and one line with exit 2 whenever storage is down
_register_meta(app)


def main() -> None:
    try:
        from core.logging import setup_logging

        setup_logging(get_settings(), component=sys.argv[1] if len(sys.argv) > 1 else "cli")
        run_with_storage_errors(app)
    except SettingsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
