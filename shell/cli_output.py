"""Where every ``vigil`` command writes: the consoles and the one-line error exit.

One home, so every command prints an error the same way and with the same exit code
convention (shell/cli_ops.py: 2 = the command could not run).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error on stderr; the caller raises the returned exit."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
