"""The ``vigil`` command line.

This module is the composition root of the process shell: it reaches the Celery app
(``tasks``) and the paper exchange (``sim``) through imports inside the command that needs
them, so starting one command never loads what another needs. The engine (``core``) imports
neither, nor anything of the shell.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from core.config import Settings, SettingsError, get_settings
from shell.cli_output import console, err, fail

R = TypeVar("R")

app = typer.Typer(
    name="vigil",
    help="Execution and risk-management engine for crypto perpetual futures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def settings_or_exit() -> Settings:
    from core.venues import check_venues

    try:
        settings = get_settings()
        check_venues(settings)  # two venues on one URL or key: refused before anything starts
        return settings
    except SettingsError as exc:
        raise fail(str(exc)) from None


# --- the whole system --------------------------------------------------------------------


@app.command()
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
    from shell.runtime.stack import Stack, StackOptions, StartupError

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
    raise typer.Exit(code)


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


@app.command()
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


@app.command()
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


# --- single processes --------------------------------------------------------------------


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = (
        "signals,orders,stops,maintenance"
    ),
    concurrency: Annotated[int, typer.Option(min=1)] = 2,
    name: Annotated[str, typer.Option(help="Node name (unique per machine).")] = "worker",
    pool: Annotated[str, typer.Option(help="prefork, threads or solo.")] = "prefork",
    venue: Annotated[
        str | None,
        typer.Option(
            help="Take only this venue's work: its own queues (signals.VENUE, orders.VENUE, "
            "stops.VENUE), used when VIGIL_VENUE_QUEUES lists it."
        ),
    ] = None,
) -> None:
    """Run a Celery worker for the given queues (or for one venue's own, with --venue)."""
    settings = settings_or_exit()
    if venue is not None:
        from shell.cli_venues import VenueChoiceError, worker_queues

        try:
            queues = worker_queues(settings, venue)
        except VenueChoiceError as exc:
            raise fail(str(exc)) from None
    from tasks.app import app as celery

    celery.worker_main(
        [
            *_quiet_in_json_mode(settings),
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "-P",
            pool,
            "--loglevel",
            settings.log_level,
            "-E",
        ]
    )


@app.command()
def beat() -> None:
    """Run Celery beat: every periodic job in beat_schedule.py."""
    settings = settings_or_exit()
    from core.services.deadman import start_beat_watch
    from tasks.app import app as celery

    # beside beat, not on a worker: pages when workers go, and its dead-man's ping dies with it
    start_beat_watch(settings, lambda timeout: _worker_names(celery, timeout))
    schedule = settings.home_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery.start(
        [
            *_quiet_in_json_mode(settings),
            "beat",
            "-s",
            str(schedule),
            "--loglevel",
            settings.log_level,
        ]
    )


def _quiet_in_json_mode(settings: Settings) -> list[str]:
    """Celery's start-up banner is plain text: off when every log line must be JSON."""
    return ["--quiet"] if settings.log_json else []


def _worker_names(celery: Any, timeout: float) -> list[str]:
    replies = celery.control.ping(timeout=timeout) or []
    return [name for reply in replies for name in reply]


@app.command()
def flower() -> None:
    """Run Flower (queue and worker monitor) with basic auth from settings."""
    settings = settings_or_exit()
    from shell.runtime.flower_doors import exposure_refusal, protect_metrics
    from tasks.app import app as celery

    if (refusal := exposure_refusal(settings)) is not None:
        raise fail(refusal)
    protect_metrics()
    auth = f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
    celery.start(
        [
            "flower",
            f"--port={settings.flower_port}",
            f"--address={settings.flower_address}",
            f"--basic-auth={auth}",
            "--persistent=False",
        ]
    )


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(help="Port for REST and WebSocket (default 8710, or the venue's URL's)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of prices and faults.")] = 1,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: built-in set).")
    ] = None,
    scenario: Annotated[str | None, typer.Option(help="Price scenario or CSV to replay.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Accepted key (default VIGIL_API_KEY).")
    ] = None,
    api_secret: Annotated[
        str | None, typer.Option("--api-secret", help="Its secret (default VIGIL_API_SECRET).")
    ] = None,
    tick_interval: Annotated[float, typer.Option(help="Mark price cadence, seconds.")] = 1.0,
    dialect: Annotated[
        str | None,
        typer.Option(help="binance (USD-M) or bybit (v5 linear); default VIGIL_PAPER_DIALECT."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="File keeping the account across restarts "
            "(default: VIGIL_HOME/paper-exchange/DIALECT.account).",
        ),
    ] = None,
    memory_only: Annotated[
        bool, typer.Option("--memory-only", help="Keep the account in memory only.")
    ] = False,
    venue: Annotated[
        str | None,
        typer.Option(
            help="Serve this venue of VIGIL_EXCHANGES (binance or bybit): its dialect, its "
            "VIGIL_<VENUE>_API_KEY/_SECRET and its URL's port."
        ),
    ] = None,
) -> None:
    """Run the paper exchange: Binance USD-M (or Bybit v5) REST and WebSocket on one port.

    The account (wallet, positions, orders, trades) survives a restart, as on a real venue.
    """
    from sim.server import DIALECTS, serve

    settings = settings_or_exit()
    if venue is not None:
        from shell.cli_venues import VenueChoiceError, paper_venue

        try:
            settings, port = paper_venue(settings, venue, port)
        except VenueChoiceError as exc:
            raise fail(str(exc)) from None
    chosen = dialect or settings.paper_dialect
    if chosen not in DIALECTS:
        raise fail(f"--dialect must be one of {', '.join(DIALECTS)}")
    if state is None and not memory_only:
        state = settings.home_dir / "paper-exchange" / f"{chosen}.account"
    serve(
        host,
        port or 8710,
        seed=seed,
        symbols=[s.strip().upper() for s in symbols.split(",")] if symbols else None,
        scenario=scenario,
        api_key=api_key or settings.api_key.get_secret_value(),
        api_secret=api_secret or settings.api_secret.get_secret_value(),
        tick_interval=tick_interval,
        dialect=chosen,
        state_path=None if memory_only else state,
    )


@app.command("signal-sim")
def signal_sim(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8730,
    token: Annotated[
        str | None, typer.Option(help="Bearer token clients must present (default setting).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between waves.")] = 60.0,
    count: Annotated[int, typer.Option(help="Signals per wave.")] = 10,
    seed: Annotated[int, typer.Option()] = 1,
    exchange: Annotated[str, typer.Option()] = "binance",
) -> None:
    """Run the signal source simulator: a WebSocket server emitting signal waves."""
    settings = settings_or_exit()
    from sim.signal_source import serve

    secret = token or (settings.signal_token.get_secret_value() if settings.signal_token else None)
    if not secret:
        raise fail("a token is required: --token or VIGIL_SIGNAL_TOKEN")
    serve(host, port, token=secret, interval=interval, count=count, seed=seed, exchange=exchange)


@app.command()
def ingest(
    exchange: Annotated[
        str | None,
        typer.Option(help="binance or bybit: whose waves to dispatch (default: VIGIL_EXCHANGE's)."),
    ] = None,
    signals: Annotated[
        bool,
        typer.Option(
            help="Read the signal stream (VIGIL_SIGNAL_URL). With two venues, one ingest reads "
            "it (its signals name their venue) and the other runs --no-signals."
        ),
    ] = True,
) -> None:
    """Run the ingest: signal socket, wave dispatcher, price stream. One per exchange.

    Signals come from VIGIL_SIGNAL_URL with VIGIL_SIGNAL_TOKEN; each is stored before the
    next frame is read, and each due wave is enqueued as vigil.signals.process_wave.
    """
    settings = settings_or_exit()
    from core.ingest.context import IngestContext
    from core.ingest.process import main as run_ingest
    from core.logging import setup_logging
    from core.services.deps import exchange_name
    from tasks.sender import celery_sender

    name = exchange or exchange_name(settings)
    if name not in ("binance", "bybit"):
        raise fail(f"--exchange must be binance or bybit, not {name!r}")
    from core.services.deps import venue_settings
    from core.venues import configured_venues

    if name not in configured_venues(settings):
        raise fail(f"venue {name} is not configured (VIGIL_EXCHANGES)")
    settings = venue_settings(settings, name)  # its own price stream, key and URL
    if not signals:
        settings = settings.model_copy(update={"signal_url": None})
    setup_logging(settings, component="ingest")
    raise typer.Exit(run_ingest(IngestContext(settings, name, celery_sender(settings))))


# --- database ------------------------------------------------------------------------------


@db_app.command("upgrade")
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


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from core.db import migrate
    from core.endpoints import resolve_database_url

    url = resolve_database_url(settings_or_exit())
    migrate.downgrade(url, revision)
    console.print(f"schema at {migrate.current_revision(url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema's revision and the code's newest one."""
    from core.db import migrate
    from core.endpoints import resolve_database_url

    url = resolve_database_url(settings_or_exit())
    console.print(f"database: {migrate.current_revision(url)}  code: {migrate.head_revision(url)}")


# operator commands (task, diagnose, cleanup, events, reproduce-duplicates, api)
from shell.cli_ops import register as _register_operator_commands  # noqa: E402

_register_operator_commands(app)

from shell.cli_control import register as _register_control_commands  # noqa: E402

_register_control_commands(app)

from shell.cli_settings import register as _register_settings_commands  # noqa: E402

_register_settings_commands(app)

# --version, healthcheck, and one line with exit 2 whenever storage is down
from shell.cli_meta import register as _register_meta  # noqa: E402
from shell.cli_meta import run_with_storage_errors  # noqa: E402

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
