"""Operator commands: ``vigil task``, ``diagnose``, ``cleanup``, ``events``,
``reproduce-duplicates`` and ``api``.

They work against a running system: with ``VIGIL_DATABASE_URL`` / ``VIGIL_REDIS_URL`` set,
or, unset, against the embedded servers a ``vigil up`` on this machine started (same
``VIGIL_HOME`` defaults). Like shell/cli.py this is the shell: Celery is imported inside the
commands that need it, never by the engine.

Exit codes: 0 success (diagnose: clean), 1 the command's answer is "no" (violations found, a
task failed, duplicates seen), 2 the command could not run (bad setting, storage or exchange
unreachable), 3 a waited-for task gave no answer in time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from core.config import Settings, SettingsError, get_settings
from shell.cli_output import console, err, fail

if TYPE_CHECKING:
    from celery import Celery

    from core.services.deps import Deps


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None


@contextmanager
def _storage_errors() -> Iterator[None]:
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


def _deps() -> Deps:
    from core.services.deps import get_deps

    _settings()
    return get_deps()


def _celery() -> Celery:
    from tasks.app import create_app

    celery = create_app(_settings())
    celery.loader.import_default_modules()
    return celery


def _task_names(celery: Celery) -> list[str]:
    return sorted(name for name in celery.tasks if name.startswith("vigil."))


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise fail(f"--arg expects key=value, got {pair!r}")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs


# --- vigil task ------------------------------------------------------------------------------


def task(
    name: Annotated[
        str | None,
        typer.Argument(help="Task to send: full name or short (`reconciliation`, `ping`)."),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List every registered vigil.* task and exit.")
    ] = False,
    exchange: Annotated[str | None, typer.Option(help="Passed as kwarg `exchange`.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Passed as kwarg `symbol`.")] = None,
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", help="Extra kwarg key=value (value parsed as JSON if it can be)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the result; exit 1 if the task failed.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 120.0,
) -> None:
    """Send any registered task now, e.g. `vigil task reconciliation --wait`.

    Beat runs these on their cadences; this runs one by hand, through the broker, on
    whichever worker consumes its queue. `vigil task --list` shows what exists.
    """
    from core.api.task_names import AmbiguousTask, UnknownTask, resolve_task_name

    celery = _celery()
    names = _task_names(celery)
    if list_:
        _print_tasks(celery, names)
        return
    if name is None:
        raise fail("give a task name, or --list to see them")
    try:
        full = resolve_task_name(name, names)
    except (UnknownTask, AmbiguousTask) as exc:
        raise fail(str(exc)) from None
    kwargs = _task_kwargs(celery, full, _parse_args(arg or []), exchange, symbol)
    queue = celery.amqp.router.route({}, full)["queue"].name
    from shell.cli_meta import check_broker

    check_broker()
    with _storage_errors():
        result = celery.send_task(full, kwargs=kwargs, ignore_result=False)  # kept an hour
    console.print(f"sent {full} to queue {queue} (id {result.id})", highlight=False)
    if wait:
        _wait_for(result, full, queue, timeout)


def _task_kwargs(
    celery: Celery,
    full: str,
    kwargs: dict[str, Any],
    exchange: str | None,
    symbol: str | None,
) -> dict[str, Any]:
    """The task's keyword arguments, checked against its signature here, not on a worker.

    ``--exchange`` goes to a task that takes ``exchange``; a task without it works on the
    worker's configured exchange, so naming that one is accepted and any other refused.
    ``--symbol`` goes to ``symbol``, or as a one-element ``symbols`` list.
    """

    from core.api.task_args import sender_signature
    from core.services.deps import exchange_name

    params = sender_signature(celery.tasks[full].run).parameters
    if exchange is not None:
        if "exchange" in params:
            kwargs["exchange"] = exchange
        elif exchange != (configured := exchange_name(_settings())):
            raise fail(
                f"{full} works on the configured exchange ({configured}), not {exchange!r}; "
                "run it with that exchange's settings"
            )
    if symbol is not None:
        wanted = symbol.upper()
        if "symbol" in params:
            kwargs["symbol"] = wanted
        elif "symbols" in params:
            kwargs["symbols"] = [wanted]
        else:
            raise fail(f"{full} takes no symbol; its arguments: ({', '.join(params)})")
    from core.api.task_args import BadTaskArguments, check_task_arguments

    try:
        check_task_arguments(celery.tasks[full].run, kwargs, full)
    except BadTaskArguments as exc:
        raise fail(str(exc)) from None
    return kwargs


def _print_tasks(celery: Celery, names: list[str]) -> None:
    """One block per task: name, queue, arguments, then what it does (any terminal width)."""
    import inspect

    from core.api.task_args import sender_signature

    for full in names:
        registered = celery.tasks[full]
        queue = celery.amqp.router.route({}, full)["queue"].name
        params = ", ".join(sender_signature(registered.run).parameters)
        doc = (inspect.getdoc(registered.run) or "").strip().splitlines()
        console.print(f"[bold]{full}[/]  queue={queue}  args=({params})", highlight=False)
        if doc:
            console.print(f"    {doc[0]}", highlight=False)
    console.print(f"{len(names)} tasks; send one with `vigil task NAME [--wait]`")


def _wait_for(result: Any, full: str, queue: str, timeout: float) -> None:
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        value = result.get(timeout=timeout, propagate=False)
        failed = result.failed()
    except CeleryTimeout:
        raise fail(
            f"no result within {timeout:.0f}s: is a worker consuming queue {queue}?", 3
        ) from None
    finally:
        result.forget()
    if failed:
        raise fail(f"{full} failed: {type(value).__name__}: {value}", 1)
    console.print_json(json.dumps(value, default=str))


# --- vigil diagnose --------------------------------------------------------------------------


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

    _deps()  # settings checked first: one line on a bad one
    with _storage_errors():
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


# --- vigil cleanup ---------------------------------------------------------------------------


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

    with _storage_errors():
        report = run_cleanup(_deps(), apply=apply)
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


# --- vigil events ----------------------------------------------------------------------------


def events(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Event type(s), comma-separated.")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="info, warning, error, critical.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, or relative: 15m, 2h, 3d.")] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Timeline of one position's life.")
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Timeline of one position (by id).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="Rows (default 50; a timeline: 1000)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The event log (newest first), or one position's timeline with --position.

    With --position or --correlation-id: that position's whole life, oldest first (signal,
    entry, fill, stop, trailing moves, close), including events from before it had an id.
    """
    from core.api.queries import (
        BadQuery,
        EventFilter,
        event_dict,
        list_events,
        parse_since,
        position_correlation,
    )
    from core.clock import SYSTEM_CLOCK
    from core.db.session import new_session

    _settings()

    with _storage_errors(), new_session() as session:
        if position is not None and correlation_id is None:
            correlation_id = position_correlation(session, position)
            if correlation_id is None:
                raise fail(f"no position {position}", 1)
        try:
            f = EventFilter(
                symbol=symbol,
                types=tuple(t.strip() for t in (type_ or "").split(",") if t.strip()),
                severity=severity,
                since=parse_since(since, SYSTEM_CLOCK.now()),
                correlation_id=correlation_id,
                limit=limit or (1000 if correlation_id else 50),
            )
        except BadQuery as exc:
            raise fail(str(exc)) from None
        rows = [event_dict(e) for e in list_events(session, f)]
    if as_json:
        for row in rows:
            console.print(json.dumps(row, default=str), highlight=False, soft_wrap=True)
        return
    title = f"timeline of {correlation_id}" if f.is_timeline else "events (newest first)"
    table = Table(title=title)
    for column in ("id", "time", "type", "sev", "symbol", "pos", "details"):
        table.add_column(column, overflow="fold")
    for row in rows:
        details = ", ".join(f"{k}={v}" for k, v in sorted((row["data"] or {}).items()))
        table.add_row(
            str(row["id"]),
            row["created_at"][11:23] if f.is_timeline else row["created_at"][:19],
            row["type"],
            row["severity"],
            row["symbol"] or "",
            str(row["position_id"] or ""),
            details[:200],
        )
    console.print(table)


# --- vigil reproduce-duplicates -------------------------------------------------------------


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
    with _storage_errors():
        try:
            report = run(
                _deps(),
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

    celery = _celery()
    try:
        name = resolve_task_name("reconciliation", _task_names(celery))
    except (UnknownTask, AmbiguousTask):
        err.print("no reconciliation task registered yet: racing without it")
        return None

    def kick() -> None:
        celery.send_task(name)

    return kick


# --- vigil api -------------------------------------------------------------------------------


def api(
    host: Annotated[str | None, typer.Option(help="Interface (default VIGIL_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default VIGIL_API_PORT).")] = None,
) -> None:
    """Serve /health, /metrics, /positions, /events and POST /tasks/<name>."""
    from core.api.app import run_api
    from core.logging import setup_logging

    settings = _settings()
    setup_logging(settings, component="api")
    celery = _celery()
    names = _task_names(celery)

    def worker_ping(timeout: float) -> list[str]:
        replies = celery.control.ping(timeout=timeout) or []
        return [name for reply in replies for name in reply]

    def send(name: str, kwargs: dict[str, Any]) -> str:
        return str(celery.send_task(name, kwargs=kwargs).id)

    def check(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        from core.api.task_args import check_task_arguments

        return check_task_arguments(celery.tasks[name].run, kwargs, name)

    run_api(
        settings,
        host=host,
        port=port,
        worker_ping=worker_ping,
        task_sender=send,
        task_names=lambda: names,
        task_checker=check,
    )


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``vigil`` app."""
    app.command("task")(task)
    app.command("diagnose")(diagnose)
    app.command("cleanup")(cleanup)
    app.command("events")(events)
    app.command("reproduce-duplicates")(reproduce_duplicates)
    app.command("api")(api)
