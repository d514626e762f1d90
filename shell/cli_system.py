"""``vigil up``, ``demo`` and ``chaos``: the whole system on this machine.

Why together: each starts every process (embedded storage, the paper exchange, workers,
beat, ingest, API) through ``shell/runtime/stack.py`` and stops them all on the way out; the
two harnesses (shell/harness/) then audit what ran. Startup failures and Ctrl-C end each of
them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from shell.cli_output import console, err, fail
from shell.cli_running import settings_or_exit

if TYPE_CHECKING:
    from shell.runtime.stack import Stack

R = TypeVar("R")


def up(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Pool size of each worker.")] = 2,
    flower: Annotated[bool, typer.Option(help="Start Flower (queue monitor).")] = True,
    with_signal_sim: Annotated[
        bool, typer.Option("--with-signal-sim", help="Also start the signal source simulator.")
    ] = False,
    api: Annotated[bool, typer.Option(help="Start `vigil api` (health, metrics).")] = True,
    exchange: Annotated[
        str | None,
        typer.Option(
            help="binance, bybit or both: the venues to trade (default VIGIL_EXCHANGES, "
            "else the one venue of VIGIL_EXCHANGE)."
        ),
    ] = None,
) -> None:
    """Start the whole system natively: storage, migrations, paper exchange, workers, beat.

    PostgreSQL and Redis are embedded (data under VIGIL_HOME) unless VIGIL_DATABASE_URL /
    VIGIL_REDIS_URL point elsewhere. With two venues (VIGIL_EXCHANGES=binance,bybit or
    --exchange both), each paper venue gets its own paper exchange and each venue its own
    ingest; the workers and beat serve both. Ctrl-C stops every process it started.
    """
    from shell.runtime.stack import Stack, StackOptions

    if exchange is not None:
        from shell.cli_venues import VenueChoiceError, choose_venues

        try:
            choose_venues(exchange)
        except VenueChoiceError as exc:
            raise fail(str(exc)) from None
    settings = settings_or_exit()
    stack = Stack(
        settings,
        StackOptions(
            workers=workers,
            concurrency=concurrency,
            flower=flower,
            signal_sim=with_signal_sim,
            api=api,
        ),
    )
    raise typer.Exit(_run_stack(stack))


def _run_stack(stack: Stack) -> int:
    """Start storage, migrations and every process, then watch them until Ctrl-C; stop all
    of it on the way out. The exit code: 0, or 2 when the system could not start."""
    from shell.runtime.stack import StartupError

    code = 0
    try:
        with console.status("starting storage"):
            stack.start_storage(say=lambda line: console.print(line, highlight=False))
        with console.status("applying migrations"):
            stack.migrate()
        sup = stack.start_processes()
        sup.install_signal_handlers()
        with console.status("waiting for a worker to answer"):
            latency = stack.wait_for_worker()
        _print_endpoints(stack, latency)
        _watch_halts(stack)
        stack.watch(lambda line: console.print(line, highlight=False))  # until Ctrl-C
    except StartupError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        code = 2
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stack.stop()
    if code == 0:
        console.print("stopped; nothing left running")
    return code


def _watch_halts(stack: object) -> None:
    """Print the halt state now and each time it changes (`vigil halt`, a refused key)."""
    from core.db import session as db_session
    from shell.runtime.halt_watch import HaltWatch
    from shell.runtime.stack import Stack

    assert isinstance(stack, Stack) and stack.endpoints is not None
    db_session.configure(stack.endpoints.database_url)
    HaltWatch(lambda line: console.print(line, highlight=False)).start()


def _print_endpoints(stack: object, latency: float) -> None:
    from shell.runtime.stack import Stack

    assert isinstance(stack, Stack) and stack.endpoints is not None
    ep = stack.endpoints
    table = Table(title="vigil is up", show_header=False)
    table.add_row("PostgreSQL", _mask(ep.database_url))
    table.add_row("Redis", ep.redis_url)
    if len(ep.exchange_urls) > 1:
        for venue, url in ep.exchange_urls.items():
            table.add_row(f"Paper exchange ({venue})", url)
    elif ep.exchange_url:
        table.add_row("Paper exchange", ep.exchange_url)
    if ep.flower_url:
        table.add_row("Flower", f"{ep.flower_url}  (user {stack.settings.flower_user})")
    if ep.signal_url:
        table.add_row("Signal source", f"{ep.signal_url}  (read by the ingest)")
    if ep.api_url:
        table.add_row("Health / metrics", f"{ep.api_url}/health  {ep.api_url}/metrics")
        table.add_row("Console", f"{ep.api_url}/console")
    if stack.supervisor is not None:
        names = ", ".join(c.name for c in stack.supervisor.children)
        table.add_row("Processes", names)
    table.add_row("Logs", str(ep.logs))
    table.add_row("Worker round trip", f"{latency * 1000:.0f} ms")
    console.print(table)
    console.print("Ctrl-C stops everything.")


def _mask(url: str) -> str:
    from shell.runtime.stack import _redact

    return _redact(url)


def _check_paper_dialect(exchange: str, both: bool = False) -> None:
    from shell.harness.demo import CHOICES, EXCHANGES

    known = CHOICES if both else EXCHANGES
    if exchange not in known:
        raise fail(f"--exchange must be one of {', '.join(known)}")


def _run_whole_system(run: Callable[[], R]) -> R:
    """Run a harness that starts the whole system; startup failures and Ctrl-C exit cleanly."""
    from shell.runtime.stack import StartupError

    try:
        return run()
    except StartupError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("interrupted; everything stopped")
        raise typer.Exit(130) from None


def demo(
    duration: Annotated[
        float, typer.Option(min=60, help="Seconds of scenario before the final audit.")
    ] = 120.0,
    exchange: Annotated[
        str,
        typer.Option(
            help="Dialect of the paper exchange: binance (USD-M) or bybit (v5 linear); both: "
            "the two venues at once, each with its own paper exchange, each audited."
        ),
    ] = "binance",
) -> None:
    """Run the whole system on this machine through a scenario, then audit it.

    Embedded PostgreSQL and Redis, the paper exchange, the signal source, ingest, two
    workers, beat, Flower and the API start under VIGIL_HOME/demo (wiped first). Waves open
    positions; a trend trails stops; a flash crash hits one; positions are closed, opened
    and stripped of their stop by hand; positions age. Live progress shows while it runs;
    the report and the invariant check follow. Exit code 0 only if every invariant holds.
    With --exchange bybit the paper exchange speaks Bybit v5 (linear) instead of Binance;
    with --exchange both the scenario runs on the two venues at once, each audited.
    """
    from shell.harness.demo import print_result, run_demo

    _check_paper_dialect(exchange, both=True)
    settings = settings_or_exit()
    result = _run_whole_system(lambda: run_demo(settings, duration, console, exchange))
    print_result(console, result)
    raise typer.Exit(0 if result.clean else 1)


def chaos(
    duration: Annotated[float, typer.Option(min=30, help="Seconds of faults.")] = 600.0,
    seed: Annotated[int, typer.Option(help="Seed of fault times, kinds and signals.")] = 1,
    faults: Annotated[str, typer.Option(help="'all' or comma-separated fault kinds.")] = "all",
    workers: Annotated[int, typer.Option(min=2)] = 3,
    exchange: Annotated[
        str,
        typer.Option(
            help="The paper exchange's dialect: binance or bybit; both: the faults on Binance "
            "and the processes both share while Bybit trades beside them, each venue audited."
        ),
    ] = "binance",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
) -> None:
    """Run the whole system under seeded faults, then audit it (shell/harness/chaos.py).

    Workers, the ingest, Redis and PostgreSQL are killed and restarted; the exchange fails,
    lags and fills partially; signals repeat; positions and stops are changed by hand. Exit
    code 0 only if every invariant holds afterwards. See docs/reliability.md.
    """
    from shell.harness.chaos import FAULT_KINDS, print_result, run_chaos

    _check_paper_dialect(exchange, both=True)
    kinds = list(FAULT_KINDS) if faults == "all" else [k.strip() for k in faults.split(",")]
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise fail(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    settings = settings_or_exit()
    result = _run_whole_system(
        lambda: run_chaos(
            settings, duration, seed, kinds, workers, console.print, exchange=exchange
        )
    )
    print_result(console, result)
    if json_path is not None:
        import json

        json_path.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    raise typer.Exit(0 if result.violations == 0 else 1)


def register(app: typer.Typer) -> None:
    """Add the whole-system commands to the ``vigil`` app."""
    app.command("up")(up)
    app.command("demo")(demo)
    app.command("chaos")(chaos)
