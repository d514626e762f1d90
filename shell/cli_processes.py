"""``vigil worker``, ``beat``, ``flower``, ``sim``, ``signal-sim`` and ``ingest``: one
process each.

Why together: each runs one long-lived process of the system in the foreground, the way
``vigil up``'s supervisor (or a container) starts it; each reads its settings first and
then hands over to Celery, the paper exchange, the signal source or the ingest, imported
only by the command that runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from core.config import Settings
from shell.cli_output import fail
from shell.cli_running import settings_or_exit


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


#: ``vigil sim --state``: where the paper account is kept across restarts.
AccountFileOption = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="File keeping the account across restarts "
        "(default: VIGIL_HOME/paper-exchange/DIALECT.account).",
    ),
]


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
    state: AccountFileOption = None,
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
    from sim.server import serve

    settings, port, chosen = _paper_venue(settings_or_exit(), venue, port, dialect)
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


def _paper_venue(
    settings: Settings, venue: str | None, port: int | None, dialect: str | None
) -> tuple[Settings, int | None, str]:
    """The settings, port and dialect the paper exchange serves: a venue of VIGIL_EXCHANGES
    brings its own key pair, port and dialect; --dialect (or VIGIL_PAPER_DIALECT) otherwise."""
    from sim.server import DIALECTS

    if venue is not None:
        from shell.cli_venues import VenueChoiceError, paper_venue

        try:
            settings, port = paper_venue(settings, venue, port)
        except VenueChoiceError as exc:
            raise fail(str(exc)) from None
    chosen = dialect or settings.paper_dialect
    if chosen not in DIALECTS:
        raise fail(f"--dialect must be one of {', '.join(DIALECTS)}")
    return settings, port, chosen


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


def register(app: typer.Typer) -> None:
    """Add the single-process commands to the ``vigil`` app."""
    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("flower")(flower)
    app.command("sim")(sim)
    app.command("signal-sim")(signal_sim)
    app.command("ingest")(ingest)
