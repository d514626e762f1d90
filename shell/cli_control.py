"""``vigil halt``, ``vigil resume``, ``vigil close``: the operator's controls in an incident.

They act in this process, on the same services as ``POST /halt``, ``POST /resume``,
``POST /positions/<id>/close`` and ``POST /close-all`` (core/services/halts.py,
core/services/manual_close.py), so they work with only PostgreSQL, Redis and the venue
reachable, even when no worker is running. Closes go through the engine's one close path
(reduce-only market order, verified flat, leftovers cancelled, exit and PnL recorded,
reason ``manual``).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from shell.cli_output import fail
from shell.cli_running import current_deps, current_settings, storage_errors

if TYPE_CHECKING:
    from core.services.deps import Deps
    from core.services.manual_close import CloseResult, CloseTarget

console = Console()


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"cli:{user}@{socket.gethostname()}"


def halt(
    reason: Annotated[
        str, typer.Option(help="Why: shown in /health, the events and the alert.")
    ] = "halted by the operator",
) -> None:
    """Stop new openings now (every venue). Stops, trailing, aged closes, reconciliation
    and zombie cleanup keep running. `vigil resume` lifts it."""
    from core.clock import SYSTEM_CLOCK
    from core.services import halts

    current_settings()
    with storage_errors():
        result = halts.halt(reason, _who(), now=SYSTEM_CLOCK.now())
    h = result.halt
    state = "halted" if result.created else "already halted"
    console.print(
        f"[bold red]{state}[/] since {h.halted_at:%Y-%m-%d %H:%M:%S %Z} by {h.halted_by}: "
        f"{h.reason}",
        highlight=False,
    )


def resume() -> None:
    """Lift every halt in force (the operator's, and the engine's after a refused key)."""
    from core.clock import SYSTEM_CLOCK
    from core.services import halts

    current_settings()
    with storage_errors():
        lifted = halts.resume(_who(), now=SYSTEM_CLOCK.now())
    if not lifted:
        console.print("not halted; nothing to resume")
        return
    for h in lifted:
        console.print(
            f"[green]resumed[/] halt {h.id} ({h.source}, {h.scope}) from {h.halted_by}: {h.reason}",
            highlight=False,
        )


def close(
    symbol: Annotated[str | None, typer.Argument(help="Symbol, e.g. BTCUSDT.")] = None,
    exchange: Annotated[
        str | None, typer.Option(help="Venue of the position (default: this deployment's).")
    ] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Halt openings, then close every position (of every venue; of one with "
            "--exchange).",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be closed; change nothing.")
    ] = False,
) -> None:
    """Close a position at market now (reason `manual`), or all of them with --all."""
    if all_ == (symbol is not None):
        raise fail("give a SYMBOL or --all (not both)")
    with storage_errors():
        deps = current_deps()
        venue = exchange.lower() if exchange else deps.exchange_name
        if venue != deps.exchange_name:
            from core.services.deps import VenueNotConfigured, deps_for

            try:
                deps = deps_for(venue)  # another venue of VIGIL_EXCHANGES
            except VenueNotConfigured:
                raise fail(f"this deployment trades {deps.exchange_name}, not {venue}") from None
        if all_:
            _close_all(deps if exchange else _every_venue(deps), yes=yes, dry_run=dry_run)
        else:
            assert symbol is not None
            _close_symbol(deps, symbol, yes=yes, dry_run=dry_run)


def _close_symbol(deps: Deps, symbol: str, *, yes: bool, dry_run: bool) -> None:
    from core.services import manual_close

    try:
        target = manual_close.target_on(deps, symbol)
    except manual_close.PositionNotFound as exc:
        raise fail(str(exc), 1) from None
    _print_targets([target], "would close" if dry_run else "to close")
    if dry_run:
        return
    if not yes and not typer.confirm(f"Close {target.symbol} at market now?"):
        raise typer.Exit(1)
    result = manual_close.close_one(deps, target.position_id)
    _print_results([result])
    if not result.closed:
        raise typer.Exit(1)


def _every_venue(default: Deps) -> list[Deps]:
    """Each venue of the deployment (VIGIL_EXCHANGES): ``close --all`` without ``--exchange``."""
    from core.services.deps import deps_for
    from core.venues import configured_venues

    return [
        default if name == default.exchange_name else deps_for(name)
        for name in configured_venues(default.settings)
    ]


def _close_all(venues: Deps | list[Deps], *, yes: bool, dry_run: bool) -> None:
    from core.db.session import unit_of_work
    from core.services import manual_close

    venues = venues if isinstance(venues, list) else [venues]
    with unit_of_work() as session:
        targets = [
            target
            for deps in venues
            for target in manual_close.open_targets(session, deps.exchange_name)
        ]
    _print_targets(targets, "would halt openings, then close" if dry_run else "to close")
    if dry_run:
        return
    question = f"Halt openings and close {len(targets)} position(s) at market now?"
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    report = manual_close.close_every_venue(venues, _who())
    console.print(f"[bold red]halted[/] (halt {report.halt.id}): `vigil resume` lifts it")
    _print_results(report.results)
    if not report.all_closed:
        raise typer.Exit(1)


def _print_targets(targets: Sequence[CloseTarget], title: str) -> None:
    columns = ("id", "venue", "symbol", "side", "status", "quantity", "entry")
    rows = [
        (
            str(d["position_id"]),
            d["exchange"],
            d["symbol"],
            d["side"],
            d["status"],
            d["quantity"],
            d["entry_price"] or "-",
        )
        for d in (t.as_dict() for t in targets)
    ]
    _print_table(f"{title}: {len(targets)} position(s)", columns, rows)


def _print_results(results: Sequence[CloseResult]) -> None:
    columns = ("id", "symbol", "status", "exit", "realized PnL", "error")
    rows = [
        (
            str(d["position_id"]),
            d["symbol"],
            d["status"],
            d["exit_price"] or "-",
            d["realized_pnl"] or "-",
            d["error"] or "",
        )
        for d in (r.as_dict() for r in results)
    ]
    _print_table("closed by hand", columns, rows)


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add halt, resume and close to the ``vigil`` app."""
    app.command("halt")(halt)
    app.command("resume")(resume)
    app.command("close")(close)
