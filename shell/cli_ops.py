"""Operator commands: ``vigil task`` and ``api`` here (the two that hand work to the
workers through the broker), and the registration of the others in their order: ``task``,
``diagnose``, ``cleanup`` (shell/cli_checks.py), ``events`` (shell/cli_events.py),
``reproduce-duplicates`` (shell/cli_checks.py) and ``api``.

They work against a running system: with ``VIGIL_DATABASE_URL`` / ``VIGIL_REDIS_URL`` set,
or, unset, against the embedded servers a ``vigil up`` on this machine started (same
``VIGIL_HOME`` defaults; shell/cli_running.py reaches them). Like shell/cli.py this is the
shell: Celery is imported inside the commands that need it, never by the engine.

Exit codes: 0 success (diagnose: clean), 1 the command's answer is "no" (violations found, a
task failed, duplicates seen), 2 the command could not run (bad setting, storage or exchange
unreachable), 3 a waited-for task gave no answer in time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shell.cli_checks import cleanup, diagnose, reproduce_duplicates
from shell.cli_events import events
from shell.cli_output import console, fail
from shell.cli_running import celery_app, current_settings, storage_errors, vigil_task_names

if TYPE_CHECKING:
    from celery import Celery


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

    celery = celery_app()
    names = vigil_task_names(celery)
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
    with storage_errors():
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
        elif exchange != (configured := exchange_name(current_settings())):
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


# --- vigil api -------------------------------------------------------------------------------


def api(
    host: Annotated[str | None, typer.Option(help="Interface (default VIGIL_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default VIGIL_API_PORT).")] = None,
) -> None:
    """Serve /health, /metrics, /positions, /events and POST /tasks/<name>."""
    from core.api.app import run_api
    from core.logging import setup_logging

    settings = current_settings()
    setup_logging(settings, component="api")
    celery = celery_app()
    names = vigil_task_names(celery)

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
