"""``vigil diagnose``, ``cleanup`` and ``reproduce-duplicates``: the invariants of a running
system, checked, repaired and put to the test.

Why together: ``diagnose`` reports what breaks an invariant (core/services/invariants.py),
``cleanup`` fixes what it safely can of the same report, and ``reproduce-duplicates`` races
the two paths that could open a duplicate position, then checks for one. Exit codes as in
shell/cli_ops.py: 0 clean, 1 violations or duplicates, 2 could not check.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from shell.cli_output import console, err, fail
from shell.cli_running import celery_app, current_deps, storage_errors, vigil_task_names


def diagnose(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the database against the exchange: exit 0 only when every invariant holds.

    Duplicates, active positions without a live stop, interrupted openings past their grace,
    orphan orders, orphan trailing/aged rows, status changes without their event, and
    positions the database and the exchange disagree on. Read-only; `vigil cleanup` fixes
    what can be fixed safely.
    """
    from core.services.deps import every_venue
    from core.services.invariants import check_invariants

    current_deps()  # settings checked first: one line on a bad one
    with storage_errors():
        reports = [check_invariants(deps) for deps in every_venue()]  # one per venue
    if as_json:
        shown = [r.as_dict() for r in reports]
        body = (
            shown[0]
            if len(shown) == 1
            else {"venues": {r.exchange: d for r, d in zip(reports, shown, strict=True)}}
        )
        console.print_json(json.dumps(body, default=str))
    else:
        for report in reports:
            _print_report(report)
    codes = [0 if r.clean else (2 if r.errors else 1) for r in reports]
    raise typer.Exit(max(codes))


def _print_report(report: Any) -> None:
    for error in report.errors:
        err.print(f"[bold red]could not check:[/] {error}", highlight=False)
    if not report.violations:
        state = "clean" if not report.errors else "incomplete"
        console.print(
            f"{report.exchange}: {state} ({report.positions_checked} open positions, "
            f"{report.orders_checked} open orders checked)"
        )
        return
    table = Table(title=f"{len(report.violations)} violation(s) on {report.exchange}")
    for column in (*_VIOLATION_COLUMNS, "detail"):
        table.add_column(column)
    for v in report.violations:
        table.add_row(*_violation_cells(v), v.detail)
    console.print(table)


_VIOLATION_COLUMNS = ("kind", "symbol", "position", "order")


def _violation_cells(v: Any) -> tuple[str, str, str, str]:
    """What names a violation in a table, in the order of ``_VIOLATION_COLUMNS``."""
    return (
        v.kind.value,
        v.symbol or "",
        str(v.position_id or ""),
        v.client_order_id or v.order_id or "",
    )


def cleanup(
    apply: Annotated[
        bool, typer.Option("--apply", help="Act. Without it, only print what would be done.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fix what `vigil diagnose` finds and cleanup owns; a dry run unless --apply.

    Orphan trailing/aged rows are removed, orphan orders cancelled (under the symbol lock,
    re-checked first), stale interrupted openings handed to recovery. Each applied action is
    an event (cleanup_action). Duplicates, unprotected positions and mismatches are listed
    with the task that handles them.
    """
    from core.services.cleanup import run_cleanup

    with storage_errors():
        report = run_cleanup(current_deps(), apply=apply)
    if as_json:
        console.print_json(json.dumps(report.as_dict(), default=str))
    else:
        _print_cleanup(report)
    if report.found.errors:
        raise typer.Exit(2)


def _print_cleanup(report: Any) -> None:
    for error in report.found.errors:
        err.print(f"[bold red]could not check:[/] {error}", highlight=False)
    if not report.actions and not report.left:
        console.print("nothing to clean up")
        return
    verb = "done" if report.applied else "would do"
    if report.actions:
        table = Table(title=f"cleanup ({verb})")
        for column in (*_VIOLATION_COLUMNS, "action", "outcome"):
            table.add_column(column)
        for a in report.actions:
            table.add_row(*_violation_cells(a.violation), a.plan, a.outcome or "(dry run)")
        console.print(table)
    for v, why in report.left:
        console.print(f"left alone: {v.kind.value} {v.symbol or ''} {v.detail} -> {why}")
    if not report.applied and report.actions:
        console.print("dry run: nothing changed; run `vigil cleanup --apply` to act")


def reproduce_duplicates(
    threads: Annotated[int, typer.Option(min=1, max=64, help="Concurrent threads.")] = 8,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds to run.")] = 30.0,
    symbols: Annotated[
        str, typer.Option(help="Comma-separated symbols the threads fight over.")
    ] = "BTCUSDT,ETHUSDT,SOLUSDT",
    kick_reconciliation: Annotated[
        bool,
        typer.Option(help="Also send the reconciliation task every 0.5 s (if registered)."),
    ] = True,
) -> None:
    """Reproduce seeds/003's duplicate-position race against the running system.

    Threads open positions (signal path) and insert adoptions (reconciliation path) for the
    same symbols at once, while reconciliation runs. Prints attempts, duplicates the
    database refused, and actual duplicates; exit 0 only if there were none. Paper exchange
    only: it opens and closes positions, and closes its own at the end.
    """
    from shell.harness.duplicates_repro import LiveExchangeRefused
    from shell.harness.duplicates_repro import reproduce_duplicates as run

    kick = None
    if kick_reconciliation:
        kick = _reconciliation_kicker()
    with storage_errors():
        try:
            report = run(
                current_deps(),
                threads=threads,
                duration=duration,
                symbols=[s.strip().upper() for s in symbols.split(",") if s.strip()],
                kick_reconciliation=kick,
            )
        except LiveExchangeRefused as exc:
            raise fail(str(exc)) from None
    table = Table(title="duplicate-position race", show_header=False)
    table.add_row("threads x seconds", f"{threads} x {duration:g}")
    table.add_row("openings attempted", str(report.openings_attempted))
    table.add_row("adoptions attempted", str(report.adoptions_attempted))
    table.add_row("duplicates refused by the database", str(report.refused))
    table.add_row("positions closed", str(report.closes))
    table.add_row("errors (retried later by the system)", str(dict(report.errors) or "none"))
    table.add_row("ACTUAL DUPLICATES", str(report.actual_duplicates))
    console.print(table)
    for v in report.duplicates:
        console.print(f"duplicate: {v.exchange} {v.symbol}: {v.detail}")
    for line in report.excess_on_exchange:
        console.print(f"exchange holds more than the DB: {line}")
    for line in report.crashed:
        err.print(f"[bold red]crashed:[/] {line}", highlight=False)
    raise typer.Exit(0 if report.actual_duplicates == 0 and not report.crashed else 1)


def _reconciliation_kicker() -> Any:
    from core.api.task_names import AmbiguousTask, UnknownTask, resolve_task_name

    celery = celery_app()
    try:
        name = resolve_task_name("reconciliation", vigil_task_names(celery))
    except (UnknownTask, AmbiguousTask):
        err.print("no reconciliation task registered yet: racing without it")
        return None

    def kick() -> None:
        celery.send_task(name)

    return kick
