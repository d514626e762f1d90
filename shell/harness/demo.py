"""``vigil demo``: the whole system on this machine, driven through a scenario, then audited.

Everything runs as in production (embedded PostgreSQL and Redis, the paper exchange, the
signal source, ingest, workers, beat, Flower, the API), with thresholds shortened so that a
couple of minutes show every path: waves open positions, a trend activates and trails stops,
a flash crash hits a stop on the exchange, a position closed by hand becomes a phantom, an
orphan order is cleaned up, a position opened by hand is adopted, a stop cancelled by hand is
restored, positions age and are closed. The demo only acts on the outside world (signals and
the exchange's admin API), never on the engine, and ends by asking the database and the
exchange what happened: the report, and the invariant check that sets the exit code.

``exchange`` picks the paper exchange's dialect (``binance``: USD-M, ``bybit``: v5 linear;
the "by hand" steps speak the venue's terms: a Bybit stop is a conditional order, a Binance
one an algo order). ``both`` runs one deployment trading the two venues at once: two paper
exchanges, one signal stream naming venues, the scenario played and audited on each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from core.clock import SYSTEM_CLOCK
from core.config import Settings, get_settings, load_settings
from core.db import session as db_session
from core.db.session import unit_of_work
from core.domain.positions import NON_TERMINAL
from core.services.deps import Deps, build_adapter, venue_settings
from core.services.executor import Executor
from shell.harness.protection_monitor import MonitorReport, ProtectionMonitor
from shell.harness.run_report import RunFigures, collect
from shell.runtime.embedded import free_port
from shell.runtime.halt_watch import openings_line
from shell.runtime.stack import Endpoints, Stack, StackOptions
from shell.runtime.supervisor import raise_if_stop_requested

# Shortened thresholds: minutes of real time show hours of a position's life.
DEMO_SETTINGS = {
    "VIGIL_EXCHANGE": "paper",
    "VIGIL_WAVE_INTERVAL": "10",
    "VIGIL_WAVE_GRACE": "1",
    "VIGIL_MAX_TRADES_PER_WAVE": "4",
    "VIGIL_WAVE_BUFFER": "2",
    "VIGIL_POSITION_SIZE_USDT": "500",
    "VIGIL_LEVERAGE": "10",
    "VIGIL_STOP_LOSS_PERCENT": "2",
    "VIGIL_TRAILING_ACTIVATION_PERCENT": "0.6",
    "VIGIL_TRAILING_CALLBACK_PERCENT": "0.3",
    "VIGIL_TRAILING_MIN_STEP_PERCENT": "0.05",
    "VIGIL_TRAILING_MIN_UPDATE_INTERVAL": "1",
    "VIGIL_PROTECTION_INTERVAL": "4",
    "VIGIL_RECONCILIATION_INTERVAL": "5",
    "VIGIL_ZOMBIE_INTERVAL": "6",
    "VIGIL_AGED_INTERVAL": "4",
    "VIGIL_RECOVERY_INTERVAL": "10",
    "VIGIL_HEARTBEAT_INTERVAL": "5",
    "VIGIL_AGED_MAX_AGE_HOURS": "0.012",  # aged after ~45 s
    "VIGIL_AGED_GRACE_HOURS": "0.008",  # ~30 s of grace
    "VIGIL_AGED_ACCELERATION_AFTER_HOURS": "0.015",
    "VIGIL_AGED_LOSS_STEP_PERCENT_PER_HOUR": "120",  # 2 % a minute once progressive
    "VIGIL_AGED_MAX_LOSS_PERCENT": "3",
    "VIGIL_INTERMEDIATE_STATE_GRACE_SECONDS": "15",
}


def ports_of_its_own() -> dict[str, str]:
    """Free ports for every server of a harness's stack, so it runs beside a ``vigil up``."""
    return {
        "VIGIL_EMBEDDED_PG_PORT": str(free_port()),
        "VIGIL_EMBEDDED_REDIS_PORT": str(free_port()),
        "VIGIL_FLOWER_PORT": str(free_port()),
        "VIGIL_API_PORT": str(free_port()),
        "VIGIL_SIGNAL_SIM_PORT": str(free_port()),
        "VIGIL_EXCHANGE_URL": f"http://127.0.0.1:{free_port()}",
    }


def use_storage(endpoints: Endpoints) -> None:
    """From now on this process, and every child the stack starts, uses the harness's own
    PostgreSQL and Redis (never an operator's, whatever the environment said)."""
    os.environ["VIGIL_DATABASE_URL"] = endpoints.database_url
    os.environ["VIGIL_REDIS_URL"] = endpoints.redis_url
    get_settings.cache_clear()
    db_session.configure(endpoints.database_url)


WAVE_ONE = [
    ("BTCUSDT", "BUY", 82),
    ("ETHUSDT", "BUY", 79),
    ("SOLUSDT", "SELL", 77),
    ("BNBUSDT", "BUY", 74),
    ("XRPUSDT", "BUY", 71),
    ("ADAUSDT", "BUY", 12),  # filtered by the minimum score
]
WAVE_TWO = [("DOGEUSDT", "BUY", 80), ("LTCUSDT", "SELL", 76), ("BTCUSDT", "BUY", 90)]
EXCHANGES = ("binance", "bybit")
CHOICES = (*EXCHANGES, "both")  # what `vigil demo --exchange` takes


class AdminRefused(RuntimeError):
    """The paper exchange (or signal source) refused an admin call; the message says why."""


@dataclass
class Step:
    at: float  # seconds after the start
    label: str
    action: Callable[[DemoSystem], None]
    done: bool = False


@dataclass
class DemoSystem:
    """The running stack plus the outside world's handles (exchange admin, signal source)."""

    stack: Stack
    settings: Settings
    exchange_url: str
    signal_admin_url: str
    deps: Deps
    log: list[str] = field(default_factory=list)
    picked: dict[str, str] = field(default_factory=dict)  # scenario role -> symbol

    @property
    def venue(self) -> str:
        """The paper exchange's dialect, which is the venue the engine records."""
        return self.deps.exchange_name

    def admin(self, path: str, body: dict[str, Any] | None = None, base: str = "") -> Any:
        url = (base or self.exchange_url) + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - loopback URL built by the demo
            url,
            data=data,
            method="POST" if body is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:  # say what the exchange answered
            answer = exc.read().decode(errors="replace")[:300]
            raise AdminRefused(f"{path}: {exc.code} {answer}") from exc

    def emit(self, signals: list[tuple[str, str, int]]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        frames = [
            {
                "id": f"demo-{symbol.lower()}-{int(time.time() * 1000) % 10**8}",
                "symbol": symbol,
                "exchange": self.venue,
                "action": action,
                "score_week": score,
                "score_month": score - 5,
                "timestamp": now,
            }
            for symbol, action, score in signals
        ]
        self.admin("/_sim/emit", {"signals": frames, "batch": True}, base=self.signal_admin_url)

    def open_symbols(self) -> dict[str, str]:
        with unit_of_work() as s:
            from sqlalchemy import select

            from core.db.models import Position

            rows = s.execute(
                select(Position.symbol, Position.side).where(
                    Position.status == "active", Position.exchange == self.venue
                )
            ).all()
        return {symbol: side for symbol, side in rows}

    def pick(self, exclude: set[str] | None = None, side: str | None = None) -> str | None:
        for symbol, position_side in sorted(self.open_symbols().items()):
            if symbol in (exclude or set()):
                continue
            if side is None or side == position_side:
                return symbol
        return None


def _price(system: DemoSystem, symbol: str) -> Decimal:
    return Decimal(str(system.admin("/_sim/prices")["prices"][symbol]))


def _trend_up(system: DemoSystem) -> None:
    symbol = system.pick(side="long")
    if symbol:
        target = _price(system, symbol) * Decimal("1.03")
        system.admin("/_sim/path", {"symbol": symbol, "target": str(target), "seconds": 25})
        system.log.append(f"trend: {symbol} +3 % over 25 s (trailing should activate and move)")
        system.picked["trend"] = symbol


def _flash_crash(system: DemoSystem) -> None:
    symbol = system.pick(exclude=set(system.picked.values()), side="long")
    if symbol:
        system.admin(
            "/_sim/price",
            {"symbol": symbol, "price": str(_price(system, symbol) * Decimal("0.94"))},
        )
        system.log.append(f"flash crash: {symbol} -6 % (its stop fires on the exchange)")
        system.picked["crash"] = symbol


def _close_by_hand(system: DemoSystem) -> None:
    symbol = system.pick(exclude=set(system.picked.values()))
    if symbol:
        system.admin("/_sim/close_position", {"symbol": symbol})
        system.log.append(f"closed by hand: {symbol} (reconciliation finds a phantom)")
        system.picked["phantom"] = symbol


def _orphan_order(system: DemoSystem) -> None:
    trigger = str((_price(system, "AVAXUSDT") * Decimal("0.9")).quantize(Decimal("0.01")))
    if system.venue == "bybit":
        # Bybit refuses a reduce-only order with nothing to reduce: a conditional sell
        # (in the one order book) is what a hand leaves behind there
        order: dict[str, Any] = {"side": "SELL", "qty": "1", "triggerPrice": trigger}
    else:
        order = {
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": trigger,
            "closePosition": True,
        }
    system.admin("/_sim/order", {"symbol": "AVAXUSDT", **order})
    system.log.append("orphan stop placed by hand on AVAXUSDT (zombie cleanup removes it)")


def _open_by_hand(system: DemoSystem) -> None:
    system.admin("/_sim/open_position", {"symbol": "LINKUSDT", "side": "BUY", "quantity": "20"})
    system.log.append("position opened by hand on LINKUSDT (adopted and protected)")


def _live_stops(system: DemoSystem) -> list[tuple[str, str]]:
    """(symbol, order id) of every live stop, as the exchange's admin shows them."""
    state = system.admin("/_sim/state")
    if system.venue == "bybit":
        return [
            (o["symbol"], str(o["orderId"]))
            for o in state.get("open_orders", [])
            if o.get("stopOrderType")
        ]
    return [(o["symbol"], str(o["algoId"])) for o in state.get("open_algo_orders", [])]


def _cancel_stop_by_hand(system: DemoSystem) -> None:
    taken = set(system.picked.values())
    for symbol, order_id in _live_stops(system):
        if symbol not in taken and symbol in system.open_symbols():
            Executor.of(system.deps).cancel(symbol, order_id, conditional=True)
            system.log.append(f"stop cancelled by hand on {symbol} (protection restores it)")
            system.picked["naked"] = symbol
            return


def scenario(duration: float) -> list[Step]:
    """The timeline; later steps scale with ``duration`` so short runs still end clean."""
    late = max(60.0, duration * 0.45)
    return [
        Step(1, "wave 1: 6 signals (1 below the minimum score)", lambda s: s.emit(WAVE_ONE)),
        Step(20, "trend up on a long", _trend_up),
        Step(24, "flash crash on a long", _flash_crash),
        Step(28, "a position closed by hand", _close_by_hand),
        Step(30, "an orphan stop placed by hand", _orphan_order),
        Step(32, "a position opened by hand", _open_by_hand),
        Step(36, "a stop cancelled by hand", _cancel_stop_by_hand),
        Step(late, "wave 2: 3 signals (1 for a symbol already open)", lambda s: s.emit(WAVE_TWO)),
    ]


def _queue_depths(client: redis.Redis) -> dict[str, int]:
    return {q: int(client.llen(q)) for q in ("signals", "orders", "stops", "maintenance")}


def _progress(
    system: DemoSystem, monitors: list[ProtectionMonitor], started: float, duration: float
) -> Table:
    figures = collect()
    table = Table(
        title=f"vigil demo — {time.monotonic() - started:4.0f}s / {duration:.0f}s",
        show_header=False,
    )
    table.add_row(
        "positions",
        ", ".join(f"{k} {v}" for k, v in sorted(figures.positions_by_status.items())) or "-",
    )
    table.add_row("stop moves", str(figures.stop_moves))
    table.add_row("openings", openings_line())
    elapsed = max(time.monotonic() - started, 1e-9)
    table.add_row("events", f"{figures.events_total} ({figures.events_total / elapsed:.1f}/s)")
    table.add_row(
        "queues", ", ".join(f"{k} {v}" for k, v in _queue_depths(system.deps.redis).items())
    )
    gaps = {symbol: gap for monitor in monitors for symbol, gap in monitor.current_gaps().items()}
    table.add_row("without stop now", ", ".join(f"{k} {v:.1f}s" for k, v in gaps.items()) or "none")
    return table


def status_of(symbol: str, exchange: str | None = None) -> str | None:
    """The engine's status of the symbol's open position (on ``exchange``, if given), for the
    protection monitor."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from core.db.models import Position

    try:
        with unit_of_work() as s:
            return s.scalars(
                select(Position.status).where(
                    Position.symbol == symbol,
                    Position.status.in_([st.value for st in NON_TERMINAL]),
                    *([Position.exchange == exchange] if exchange else []),
                )
            ).first()
    except SQLAlchemyError:
        return None  # PostgreSQL is being restarted; the gap is classified as established


@dataclass
class VenueAudit:
    """What the end of the run found on one venue."""

    exchange: str  # the venue, which is its paper exchange's dialect
    monitor: MonitorReport
    invariants: Any
    interfered: set[str] = field(default_factory=set)  # symbols touched "by hand"


@dataclass
class DemoResult:
    figures: RunFigures  # the whole deployment's
    audits: list[VenueAudit]  # one per venue
    log: list[str]

    @property
    def clean(self) -> bool:
        return all(audit.invariants.clean for audit in self.audits)


def run_demo(
    base: Settings, duration: float, console: Console, exchange: str = "binance"
) -> DemoResult:
    """The demo on the paper exchange speaking ``exchange``'s dialect (binance / bybit), or
    on both venues at once (``both``)."""
    if exchange not in CHOICES:
        raise ValueError(f"exchange must be one of {CHOICES}, not {exchange!r}")
    venues = list(EXCHANGES) if exchange == "both" else [exchange]
    settings = _settings_of_its_own(base, venues)
    stack = Stack(
        settings,
        StackOptions(
            workers=2,
            concurrency=2,
            flower=True,
            api=True,
            signal_sim=True,
            sim_args=["--tick-interval", "0.25", "--scenario", "calm"],
            signal_sim_args=["--interval", "100000"],
        ),
    )
    try:
        with console.status("starting PostgreSQL and Redis"):
            endpoints = stack.start_storage()
            stack.migrate()
        use_storage(endpoints)
        with console.status("starting the paper exchange, signal source, ingest, workers, beat"):
            sup = stack.start_processes()
            stack.wait_for_worker()
        sup.install_signal_handlers()
        settings = load_settings()
        client = redis.Redis.from_url(endpoints.redis_url)
        signal_url = sup.env["VIGIL_SIGNAL_URL"]
        signal_admin = signal_url.replace("ws://", "http://").rsplit("/ws", 1)[0]
        systems = []
        for venue in venues:
            own = venue_settings(settings, venue)  # its URL, key pair and dialect
            deps = Deps(own, build_adapter(own), client, SYSTEM_CLOCK)
            systems.append(DemoSystem(stack, own, own.exchange_url, signal_admin, deps))
        _print_where(console, stack)
        return _drive(systems, duration, console)
    finally:
        stack.stop()


def _settings_of_its_own(base: Settings, venues: list[str]) -> Settings:
    """The demo's settings: its own home, ports and embedded storage (the second venue's
    paper exchange on a port of its own); the live view is its only output."""
    home = base.home_dir / "demo"
    shutil.rmtree(home, ignore_errors=True)
    env = dict(DEMO_SETTINGS)
    if len(venues) > 1:
        env["VIGIL_EXCHANGES"] = ",".join(venues)
        env[f"VIGIL_{venues[1].upper()}_EXCHANGE_URL"] = f"http://127.0.0.1:{free_port()}"
    else:
        os.environ.pop("VIGIL_EXCHANGES", None)
    env.update(
        VIGIL_PAPER_DIALECT=venues[0],
        VIGIL_HOME=str(home),
        **ports_of_its_own(),
        VIGIL_SIGNAL_TOKEN=os.environ.get("VIGIL_SIGNAL_TOKEN") or "demo-token",
    )
    for name in ("VIGIL_DATABASE_URL", "VIGIL_REDIS_URL"):
        os.environ.pop(name, None)  # the demo always runs on its own embedded storage
    os.environ.update(env)
    get_settings.cache_clear()  # anything that read settings before now saw the user's
    logging.getLogger().setLevel(logging.WARNING)  # the live view is the demo's output
    return load_settings()


def _print_where(console: Console, stack: Stack) -> None:
    ep = stack.endpoints
    assert ep is not None
    exchanges = "  ".join(f"{venue} {url}" for venue, url in ep.exchange_urls.items())
    console.print(
        f"Console {ep.api_url}/console  Flower {ep.flower_url}  API {ep.api_url}/health"
        f"  paper exchanges: {exchanges}  logs {ep.logs}"
    )


def _drive(systems: list[DemoSystem], duration: float, console: Console) -> DemoResult:
    """Play the scenario on every venue at once, then audit each venue on its own."""
    from core.services.invariants import check_invariants

    monitors = [
        ProtectionMonitor(
            system.deps.exchange,
            partial(status_of, exchange=system.venue),
            interval=0.25,
        ).start()
        for system in systems
    ]
    plans = [scenario(duration) for _ in systems]
    log: list[str] = []
    started = time.monotonic()
    with Live(console=console, refresh_per_second=2) as live:
        while (elapsed := time.monotonic() - started) < duration:
            for system, steps in zip(systems, plans, strict=True):
                _play_due(system, steps, elapsed, log, console, len(systems) > 1)
            live.update(
                Group(_progress(systems[0], monitors, started, duration), "\n".join(log[-8:]))
            )
            raise_if_stop_requested()
            time.sleep(0.5)
    audits = []
    for system, monitor in zip(systems, monitors, strict=True):
        report = monitor.stop()
        interfered = {system.picked[k] for k in ("naked",) if k in system.picked}
        audits.append(
            VenueAudit(
                system.venue, report, check_invariants(system.deps), interfered | {"LINKUSDT"}
            )
        )
    return DemoResult(collect(), audits, log)


def _play_due(
    system: DemoSystem,
    steps: list[Step],
    elapsed: float,
    log: list[str],
    console: Console,
    name_venue: bool,
) -> None:
    """Run the steps now due on ``system``'s venue; what they did goes to ``log``."""
    for step in steps:
        if not step.done and elapsed >= step.at:
            step.done = True
            venue = f"{system.venue}: " if name_venue else ""
            before = len(system.log)
            system.log.append(f"[{elapsed:5.1f}s] {venue}{step.label}")
            step.action(system)
            for line in system.log[before:]:
                log.append(line if line.startswith("[") or not venue else f"{venue}{line}")
                if not console.is_terminal:  # no live view: say it as it happens
                    console.print(log[-1])


def print_result(console: Console, result: DemoResult) -> None:
    from shell.harness.demo_report import print_demo_result

    print_demo_result(console, result)
