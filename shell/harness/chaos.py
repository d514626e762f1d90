"""``vigil chaos``: the real system under seeded faults, then the invariant audit.

The stack starts as in ``vigil demo`` (embedded PostgreSQL and Redis, the paper exchange, the
signal source, ingest, workers, beat) while waves of signals and price moves flow. At seeded
random times the harness breaks something: SIGKILLs a worker (at random, while a position is
being opened, while a stop move is in flight), kills and restarts Redis and PostgreSQL (same
port and data directory), kills the ingest, injects exchange faults through ``/_sim/fault``,
duplicates and reorders signals, and acts by hand on the exchange. Killed processes are
restarted, as a container runtime would; nothing else about the engine is touched. After the
faults stop and the guardians have had their intervals, ``check_invariants`` (the same check
as ``vigil diagnose``) must find nothing, and every stored signal must have an outcome.

``exchange`` picks the paper exchange's dialect as in ``vigil demo`` (``binance`` or
``bybit``); the faults and invariants are the same on both, and only the exchange faults name
the venue's endpoints (``FAULT_ENDPOINTS``) and the acts by hand speak its terms.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from functools import partial
from typing import Any

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from core.clock import SYSTEM_CLOCK
from core.config import Settings, get_settings, load_settings
from core.db.models import Event, Heartbeat, Position, Signal, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import INTERMEDIATE
from core.exchange.errors import ExchangeFailure
from core.services.deps import Deps, build_adapter, venue_settings
from shell.harness import chaos_death as death
from shell.harness.chaos_first_tick import trend_after_activation
from shell.harness.chaos_process import (
    PROCESS_FAULT_KINDS,
    fresh_database_pool,
    inject_process_fault,
    outage_fill_outcomes,
)
from shell.harness.chaos_revive import Reviver
from shell.harness.chaos_venues import (
    SECOND_VENUE,
    CombinedReport,
    SecondVenue,
    both_venues_environment,
    merge_gaps,
    positions_by_status,
)
from shell.harness.demo import (
    CHOICES,
    DEMO_SETTINGS,
    AdminRefused,
    DemoSystem,
    _cancel_stop_by_hand,
    _close_by_hand,
    _price,
    ports_of_its_own,
    status_of,
    use_storage,
)
from shell.harness.protection_monitor import MonitorReport, ProtectionMonitor
from shell.runtime.embedded import free_port
from shell.runtime.stack import Stack, StackOptions

SYMBOLS = [
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "BNBUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "LTCUSDT",
    "AVAXUSDT",
    "LINKUSDT",
    "ADAUSDT",
]
INTERMEDIATE_VALUES = [s.value for s in INTERMEDIATE]
TERMINAL_SIGNAL_STATUSES = {"filtered", "opened", "failed", "expired"}
# a chaos run's secrets are distinctive so that a leak into logs or events is found by grep
CHAOS_SECRETS = {
    "VIGIL_API_KEY": "chaos-key-7f3a9c1e5b",
    "VIGIL_API_SECRET": "chaos-secret-2d8e6f4a0c",
    "VIGIL_SIGNAL_TOKEN": "chaos-token-9b1c3e5d7f",
}

FAULT_KINDS = (
    "worker_kill",
    "worker_kill_opening",
    "worker_kill_stop_move",
    "redis_restart",
    "postgres_restart",
    "ingest_restart",
    "exchange_latency",
    "exchange_5xx",
    "exchange_429",
    "exchange_timeout_after_accept",
    "exchange_delayed_fill",
    "exchange_partial_fill",
    "signals_duplicated_reordered",
    "close_by_hand",
    "open_by_hand",
    "stop_cancelled_by_hand",
    "trend_after_activation",
    *PROCESS_FAULT_KINDS,
)
# faults that time one path of the engine, injected on a system that has recovered from the
# faults before them (``Chaos.quiet``): the first tick of a new position (the next fault also
# waits for its measure), a stop filling during a store outage, and the stack kill (which
# would otherwise cut the recovery of the fault just before it short, e.g. a loop restart)
MEASURED_KINDS = frozenset(
    {"trend_after_activation", "redis_outage", "postgres_outage", "stack_kill"}
)
# ``/_sim/fault`` endpoint names are the venue's paths: Binance places entries on ``order``
# and stops on ``algoOrder``; Bybit places both on ``order/create`` (a stop is a
# conditional order in the one order book)
FAULT_ENDPOINTS = {
    "binance": {"order": "order", "stop": "algoOrder"},
    "bybit": {"order": "order/create", "stop": "order/create"},
}


@dataclass
class ChaosResult:
    faults: Counter[str]
    recovery: dict[str, list[float]]
    monitor: MonitorReport
    interfered: set[str]
    invariants: Any
    signals_without_outcome: int
    redeliveries: dict[str, int]
    secrets_in_events: int
    log: list[str]
    duration: float
    seed: int
    exchange: str = "binance"  # the paper exchange's dialect
    # per stack_kill: positions, stops and trailing state came back as they were
    stack_kill_intact: list[bool] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)  # e.g. live stops after a kill
    # per position whose stop was driven through during a store outage: how it ended
    stop_fills_during_outages: list[dict[str, Any]] = field(default_factory=list)
    # children that exited on their own (not killed by a fault), started again as `vigil up`
    # would: each one is a process that did not survive what it should have
    exited_on_their_own: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            len(self.invariants.violations)
            + self.signals_without_outcome
            + self.secrets_in_events
            + self.stack_kill_intact.count(False)
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data (the pytest entry and ``--json`` read this)."""
        return {
            "duration": self.duration,
            "seed": self.seed,
            "exchange": self.exchange,
            "faults": dict(self.faults),
            "recovery_seconds": self.recovery,
            "counts": self.counts,
            "longest_gap_seconds": self.longest_gaps(),
            "worst_gaps": [
                {**gap, "interfered": gap["symbol"] in self.interfered}
                for gap in self.monitor.worst(5)
            ],
            "sampling_interval": self.monitor.interval,
            "samples": self.monitor.samples,
            "failed_samples": self.monitor.failed_samples,
            "redeliveries": self.redeliveries,
            "signals_without_outcome": self.signals_without_outcome,
            "secrets_in_events": self.secrets_in_events,
            "invariant_violations": [v.as_dict() for v in self.invariants.violations],
            "stack_kill_intact": self.stack_kill_intact,
            "stop_fills_during_outages": self.stop_fills_during_outages,
            "exited_on_their_own": self.exited_on_their_own,
            "violations": self.violations,
        }

    def longest_gaps(self) -> dict[str, float]:
        now = time.monotonic()
        gaps = self.monitor.gaps
        return {
            "engine_managed": max(
                (
                    g.seconds(now)
                    for g in gaps
                    if g.kind == "established" and g.symbol not in self.interfered
                ),
                default=0.0,
            ),
            "after_interference": max(
                (g.seconds(now) for g in gaps if g.symbol in self.interfered), default=0.0
            ),
            "entry_to_stop": self.monitor.longest("opening"),
        }


def plan(duration: float, seed: int, kinds: list[str]) -> list[tuple[float, str]]:
    """Seeded fault times: every kind once, then random kinds, spread over the active phase."""
    rng = random.Random(seed)
    start, end = 12.0, max(20.0, duration - 10.0)
    chosen = list(kinds)
    extra = max(0, int((end - start) / 8.0) - len(chosen))
    chosen += [rng.choice(kinds) for _ in range(extra)]
    rng.shuffle(chosen)
    times = sorted(rng.uniform(start, end) for _ in chosen)
    return list(zip(times, chosen, strict=True))


class Chaos:
    """The running system plus the fault injectors and the recovery clocks."""

    def __init__(self, system: DemoSystem, stack: Stack, seed: int, say: Callable[[str], None]):
        self.system = system
        self.stack = stack
        self.rng = random.Random(seed + 1)
        self.say = say
        self.faults: Counter[str] = Counter()
        self.recovery: dict[str, list[float]] = {}
        self.interfered: set[str] = set()
        self._threads: list[threading.Thread] = []
        self.stack_kill_intact: list[bool] = []  # per stack_kill: everything came back
        self.counts: dict[str, list[int]] = {}
        self.outage_fills: list[dict[str, Any]] = []  # stops driven through during outages
        # held while the harness kills a process on purpose (chaos_revive leaves it alone)
        self.process_lock = threading.Lock()

    def endpoint(self, role: str) -> str:
        """The ``/_sim/fault`` endpoint that carries ``role`` ("order" or "stop") here."""
        return FAULT_ENDPOINTS[self.system.venue][role]

    # --- signals and prices ----------------------------------------------------------------

    def wave(self, n: int = 4) -> list[str]:
        symbols = self.rng.sample(SYMBOLS, n)
        self.system.emit(
            [(s, self.rng.choice(["BUY", "SELL"]), self.rng.randint(60, 95)) for s in symbols]
        )
        return symbols

    def move_prices(self) -> None:
        symbol = self.rng.choice(SYMBOLS)
        factor = Decimal(str(round(self.rng.uniform(0.985, 1.025), 4)))
        target = _price(self.system, symbol) * factor
        self.system.admin("/_sim/path", {"symbol": symbol, "target": str(target), "seconds": 15})

    # --- recovery clocks -------------------------------------------------------------------

    def _clock(self, kind: str, done: Callable[[], bool], limit: float = 120.0) -> threading.Thread:
        def run() -> None:
            started = time.monotonic()
            while time.monotonic() - started < limit:
                try:
                    if done():
                        self.recovery.setdefault(kind, []).append(time.monotonic() - started)
                        return
                except (SQLAlchemyError, redis.RedisError):
                    pass  # storage still coming back: that is what is being timed
                time.sleep(0.2)
            self.recovery.setdefault(kind, []).append(float("inf"))

        thread = threading.Thread(target=run, name=f"recovery-{kind}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def quiet(self, timeout: float = 90.0) -> None:
        """Wait until every earlier fault's recovery clock has stopped (bounded).

        A measuring fault (``MEASURED_KINDS``) times one path of the engine; on a system
        still recovering from another fault (an ingest restarting, a Redis outage) it would
        time that recovery instead.
        """
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait_recovery_clocks(self, timeout: float = 130.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _openings_resolved(self) -> bool:
        with unit_of_work() as s:
            return not s.scalar(
                select(func.count())
                .select_from(Position)
                .where(Position.status.in_(INTERMEDIATE_VALUES))
            )

    def _heartbeat_after(self, since: float, component: str = "") -> Callable[[], bool]:
        wall = SYSTEM_CLOCK.now().timestamp() - (time.monotonic() - since)

        def done() -> bool:
            with unit_of_work() as s:
                stmt = select(func.max(Heartbeat.seen_at))
                if component:
                    stmt = stmt.where(Heartbeat.component.like(f"{component}%"))
                seen = s.scalar(stmt)
            return seen is not None and seen.timestamp() > wall

        return done

    def _task_roundtrip(self) -> bool:
        from tasks.app import create_app
        from tasks.ping import worker_answers

        settings = self.system.settings
        assert self.stack.endpoints is not None
        app = create_app(settings.model_copy(update={"redis_url": self.stack.endpoints.redis_url}))
        return worker_answers(app, timeout=3)

    # --- faults ----------------------------------------------------------------------------

    def inject(self, kind: str) -> bool:
        """Inject one fault; False when an act by hand was refused (the caller retries it)."""
        if kind in MEASURED_KINDS:
            self.quiet()
        try:
            if kind == "stack_kill":
                with self.process_lock:
                    inject_process_fault(self, kind)
            elif kind in PROCESS_FAULT_KINDS:
                inject_process_fault(self, kind)
            else:
                getattr(self, f"_{kind}")()
        except ExchangeFailure as exc:
            # an act "by hand" can meet a fault injected just before, as a human would
            self.say(f"{kind} not done: the exchange refused it ({type(exc).__name__})")
            return False
        self.faults[kind] += 1
        return True

    def price(self, symbol: str) -> Decimal:
        return _price(self.system, symbol)

    def _trend_after_activation(self) -> None:
        trend_after_activation(self, SYMBOLS)

    def _kill_worker(self) -> str:
        sup = self.stack.supervisor
        assert sup is not None
        name = self.rng.choice([c.name for c in sup.children if c.name.startswith("worker")])
        with self.process_lock:
            sup.kill_and_restart(name)
        return name

    def _worker_kill(self) -> None:
        name = self._kill_worker()
        self.say(f"SIGKILL {name} (restarted)")
        self._clock("worker_kill", self._openings_resolved)

    def _worker_kill_opening(self) -> None:
        # slow fills widen the window between entry and stop, then kill when one is open
        self.system.admin(
            "/_sim/fault",
            {
                "endpoint": self.endpoint("order"),
                "kind": "delayed_fill",
                "count": 4,
                "delay_ms": 1500,
            },
        )
        self.wave(3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with unit_of_work() as s:
                row = s.execute(
                    select(Position.symbol, Position.status).where(
                        Position.status.in_(INTERMEDIATE_VALUES),
                        Position.exchange == self.system.venue,
                    )
                ).first()
            if row is not None:
                name = self._kill_worker()
                self.say(f"SIGKILL {name} while {row[0]} is {row[1]} (restarted)")
                self._clock("worker_kill_opening", self._openings_resolved)
                self._clock("opening_stop_live", death.opening_settled(row[0]))
                return
            time.sleep(0.05)
        name = self._kill_worker()
        self.say(f"SIGKILL {name} (no opening seen within 20 s)")

    def _worker_kill_stop_move(self) -> None:
        with unit_of_work() as s:
            row = s.execute(
                select(Position.symbol, Position.side, TrailingStop.update_count)
                .join(TrailingStop, TrailingStop.position_id == Position.id)
                .where(Position.status == "active", Position.exchange == self.system.venue)
            ).first()
        if row is None:
            name = self._kill_worker()
            self.say(f"SIGKILL {name} (no trailing position yet)")
            return
        symbol, side, count = row
        # a slow stop endpoint keeps the move in flight; a trend makes the engine move it
        self.system.admin(
            "/_sim/fault",
            {"endpoint": self.endpoint("stop"), "kind": "latency", "count": 4, "latency_ms": 1500},
        )
        factor = Decimal("1.03") if side == "long" else Decimal("0.97")
        target = _price(self.system, symbol) * factor
        self.system.admin("/_sim/path", {"symbol": symbol, "target": str(target), "seconds": 8})
        deadline = time.monotonic() + 15
        moved = False
        while time.monotonic() < deadline and not moved:
            with unit_of_work() as s:
                trailing = s.get(
                    TrailingStop,
                    s.scalar(
                        select(Position.id).where(
                            Position.symbol == symbol,
                            Position.status == "active",
                            Position.exchange == self.system.venue,
                        )
                    )
                    or 0,
                )
                moved = trailing is not None and (
                    trailing.state == "active" or trailing.update_count != count
                )
            moved = moved or death.move_in_flight(symbol)  # kill it in flight when seen
            time.sleep(0.05)
        in_flight = death.move_in_flight(symbol)
        count_at_kill = death.update_count(symbol)
        name = self._kill_worker()
        self.say(f"SIGKILL {name} during a trailing move on {symbol} (restarted)")
        self._clock("worker_kill_stop_move", self._openings_resolved)
        if in_flight:
            self._clock("stop_move_next_move", death.next_move(symbol, count_at_kill))
            death.count_stops_later(
                self.system.deps.exchange,
                symbol,
                10.0,
                self.counts.setdefault("live_stops_10s_after_kill", []),
                self._threads,
            )

    def _redis_restart(self) -> None:
        assert self.stack.redis is not None
        self.stack.redis.kill()
        time.sleep(1.0)
        self.stack.redis.start()
        self.say("Redis killed and restarted (same port, same append-only file)")
        self._clock("redis_restart", self._task_roundtrip)

    def _postgres_restart(self) -> None:
        assert self.stack.postgres is not None
        self.stack.postgres.kill()
        time.sleep(1.0)
        since = time.monotonic()
        self.stack.postgres.start()
        fresh_database_pool()
        self.say("PostgreSQL killed and restarted (recovers from its WAL)")
        self._clock("postgres_restart", self._heartbeat_after(since))

    def _ingest_restart(self) -> None:
        sup = self.stack.supervisor
        assert sup is not None
        since = time.monotonic()
        with self.process_lock:
            sup.kill_and_restart("ingest")
        self.say("SIGKILL ingest (restarted)")
        self._clock("ingest_restart", self._heartbeat_after(since, "ingest"))

    def _exchange(self, body: dict[str, Any], text: str, wave: bool = True) -> None:
        self.system.admin("/_sim/fault", body)
        if wave:
            self.wave(3)
        self.say(f"exchange fault: {text}")

    def _exchange_latency(self) -> None:
        self._exchange(
            {"endpoint": "*", "kind": "latency", "count": 10, "latency_ms": 2500},
            "2.5 s latency on the next 10 calls",
        )

    def _exchange_5xx(self) -> None:
        self._exchange({"endpoint": "*", "kind": "http_error", "count": 4, "status": 503}, "503 x4")

    def _exchange_429(self) -> None:
        self._exchange({"endpoint": "*", "kind": "rate_limit", "count": 4}, "429 x4")

    def _exchange_timeout_after_accept(self) -> None:
        self._exchange(
            {
                "endpoint": self.endpoint("order"),
                "method": "POST",
                "kind": "timeout_after_accept",
                "count": 1,
                "mode": "drop",
            },
            "next order executed but its answer dropped",
        )

    def _exchange_delayed_fill(self) -> None:
        self._exchange(
            {
                "endpoint": self.endpoint("order"),
                "kind": "delayed_fill",
                "count": 3,
                "delay_ms": 1200,
            },
            "next 3 market orders fill 1.2 s late",
        )

    def _exchange_partial_fill(self) -> None:
        self._exchange(
            {
                "endpoint": self.endpoint("order"),
                "kind": "partial_fill",
                "count": 2,
                "fraction": 0.5,
            },
            "next 2 market orders fill half",
        )

    def _signals_duplicated_reordered(self) -> None:
        now = time.time()
        frames = []
        for i, symbol in enumerate(self.rng.sample(SYMBOLS, 3)):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - i * 5))
            frames.append(
                {
                    "id": f"chaos-{symbol.lower()}-{int(now * 1000) % 10**8}-{i}",
                    "symbol": symbol,
                    "exchange": self.system.venue,
                    "action": self.rng.choice(["BUY", "SELL"]),
                    "score_week": 80,
                    "score_month": 75,
                    "timestamp": stamp,
                }
            )
        for frame in frames:  # newest first: out of order
            self.system.admin("/_sim/emit", {"signals": [frame]}, base=self.system.signal_admin_url)
        for _ in range(3):
            self.system.admin("/_sim/emit", {"duplicate": True}, base=self.system.signal_admin_url)
        self.say("3 signals sent newest first, the last one resent 3 times")

    def _close_by_hand(self) -> None:
        self.system.picked.clear()
        _close_by_hand(self.system)
        self._remember_hand("phantom")

    def _open_by_hand(self) -> None:
        taken = set(self.system.open_symbols())
        free = [s for s in SYMBOLS if s not in taken]
        if not free:
            self.say("open by hand skipped: every symbol has a position")
            return
        symbol = self.rng.choice(free)
        notional = Decimal(200)
        qty = notional / _price(self.system, symbol)
        # the venue's quantity step is not known here: the finest that the exchange takes
        for step in ("0.001", "0.01", "0.1", "1"):
            quantity = qty.quantize(Decimal(step), rounding=ROUND_DOWN)
            if quantity <= 0:
                continue
            try:
                self.system.admin(
                    "/_sim/open_position",
                    {"symbol": symbol, "side": "BUY", "quantity": str(quantity)},
                )
                break
            except AdminRefused as exc:
                if "qtyStep" not in str(exc) and "-1111" not in str(exc):
                    raise
        else:
            self.say(f"open by hand skipped: no quantity of {symbol} the exchange takes")
            return
        self.interfered.add(symbol)
        self.say(f"position opened by hand on {symbol}")

    def _stop_cancelled_by_hand(self) -> None:
        self.system.picked.clear()
        _cancel_stop_by_hand(self.system)
        self._remember_hand("naked")

    def _remember_hand(self, role: str) -> None:
        symbol = self.system.picked.get(role)
        if symbol:
            self.interfered.add(symbol)
            self.say(self.system.log[-1])
        else:
            self.say(f"{role}: no active position to act on")


def _signals_without_outcome() -> int:
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Signal)
                .where(Signal.status.not_in(TERMINAL_SIGNAL_STATUSES))
            )
            or 0
        )


def _redeliveries() -> dict[str, int]:
    kinds = ("task_gave_up", "order_lookup_before_retry", "position_recovered")
    with unit_of_work() as s:
        rows = s.execute(
            select(Event.type, func.count()).where(Event.type.in_(kinds)).group_by(Event.type)
        ).all()
    return {k: int(n) for k, n in rows}


def _secrets_in_events() -> int:
    """Events whose data carries one of the run's distinctive secrets (must be 0)."""
    from sqlalchemy import String, cast, or_

    with unit_of_work() as s:
        text_of = cast(Event.data, String)
        hits = or_(*(text_of.contains(secret) for secret in CHAOS_SECRETS.values()))
        return int(s.scalar(select(func.count()).select_from(Event).where(hits)) or 0)


def _environment(base: Settings, exchange: str) -> dict[str, str]:
    env = dict(DEMO_SETTINGS)
    env.update(CHAOS_SECRETS)
    if exchange == "both":
        env.update(both_venues_environment(CHAOS_SECRETS, f"http://127.0.0.1:{free_port()}"))
    else:
        os.environ.pop("VIGIL_EXCHANGES", None)
    env.update(
        VIGIL_PAPER_DIALECT="binance" if exchange == "both" else exchange,
        VIGIL_HOME=str(base.home_dir / "chaos"),
        **ports_of_its_own(),
    )
    return env


def run_chaos(
    base: Settings,
    duration: float,
    seed: int,
    kinds: list[str],
    workers: int,
    say: Callable[[str], None],
    exchange: str = "binance",
) -> ChaosResult:
    """The chaos run on the paper exchange speaking ``exchange``'s dialect (binance / bybit),
    or on both venues at once (``both``: shell/harness/chaos_venues.py)."""
    if exchange not in CHOICES:
        raise ValueError(f"exchange must be one of {CHOICES}, not {exchange!r}")
    env = _environment(base, exchange)
    home = base.home_dir / "chaos"
    shutil.rmtree(home, ignore_errors=True)
    for name in ("VIGIL_DATABASE_URL", "VIGIL_REDIS_URL"):
        os.environ.pop(name, None)  # always its own embedded storage: it gets killed
    os.environ.update(env)
    get_settings.cache_clear()
    settings = load_settings()
    stack = Stack(
        settings,
        StackOptions(
            workers=workers,
            concurrency=2,
            flower=False,
            api=False,
            signal_sim=True,
            sim_args=[
                *("--tick-interval", "0.25", "--scenario", "calm", "--seed", str(seed)),
                # the paper exchange must know the run's distinctive key to accept the engine
                *("--api-key", CHAOS_SECRETS["VIGIL_API_KEY"]),
                *("--api-secret", CHAOS_SECRETS["VIGIL_API_SECRET"]),
            ],
            signal_sim_args=["--interval", "100000"],
        ),
    )
    try:
        say("phase: starting PostgreSQL, Redis and the processes")
        endpoints = stack.start_storage()
        stack.migrate()
        use_storage(endpoints)
        sup = stack.start_processes()
        sup.install_signal_handlers()  # SIGTERM stops every child, not only the harness
        stack.wait_for_worker()
        settings = load_settings()
        deps = Deps(
            settings,
            build_adapter(settings),
            redis.Redis.from_url(endpoints.redis_url),
            SYSTEM_CLOCK,
        )
        signal_admin = sup.env["VIGIL_SIGNAL_URL"].replace("ws://", "http://").rsplit("/ws", 1)[0]
        system = DemoSystem(stack, settings, settings.exchange_url, signal_admin, deps)
        chaos = Chaos(system, stack, seed, say)
        second = None
        if exchange == "both":
            own = venue_settings(settings, SECOND_VENUE)
            other = Deps(own, build_adapter(own), deps.redis, SYSTEM_CLOCK)
            twin = DemoSystem(stack, own, own.exchange_url, signal_admin, other)
            second = SecondVenue(twin, seed, float(settings.wave_interval))
        reviver = Reviver(chaos).start()  # a child that exits on its own is started again
        try:
            result = _drive(chaos, duration, seed, kinds, say, second)
            reviver.stop()
            result.exited_on_their_own = list(reviver.revived)
            return result
        finally:
            reviver.stop()
            stack = chaos.stack  # a stack_kill fault replaces it
    finally:
        stack.stop()


def _drive(
    chaos: Chaos,
    duration: float,
    seed: int,
    kinds: list[str],
    say: Callable[[str], None],
    second: SecondVenue | None = None,
) -> ChaosResult:
    from core.services.invariants import check_invariants

    system = chaos.system
    monitor = ProtectionMonitor(
        build_adapter(system.settings), partial(status_of, exchange=system.venue), interval=0.25
    ).start()
    if second is not None:
        second.start()
    schedule = plan(duration, seed, kinds)
    say(f"phase: {len(schedule)} faults over {duration:.0f}s (seed {seed}, {system.venue} dialect)")
    started = time.monotonic()
    next_wave, next_move = 0.0, 5.0
    refused: Counter[str] = Counter()
    wave_every = float(system.settings.wave_interval)
    # a fault that waits for its moment (an opening, a trailing move) can push the ones after
    # it past ``duration``: the phase lasts until every planned fault has been injected
    while (elapsed := time.monotonic() - started) < duration or schedule:
        if elapsed >= next_wave:
            chaos.wave()
            next_wave += wave_every
        if elapsed >= next_move:
            chaos.move_prices()
            next_move += 3.0
        if second is not None:
            second.system.signal_admin_url = system.signal_admin_url  # after a stack_kill
            second.tick(elapsed)
        while schedule and schedule[0][0] <= elapsed:
            _, kind = schedule.pop(0)
            say(f"[{elapsed:6.1f}s] fault {kind}")
            began = time.monotonic()
            if not chaos.inject(kind) and refused[kind] < 3:  # a person tries again later
                refused[kind] += 1
                schedule = sorted([*schedule, (elapsed + 5.0, kind)])
            # a fault that takes its time (an outage, a stack kill) shifts the ones after it:
            # they keep their planned spacing instead of all falling due in one burst
            schedule = _shifted(schedule, time.monotonic() - began)
            elapsed = time.monotonic() - started
        time.sleep(0.2)
    say("phase: faults stop; guardians get their intervals")
    _clear_faults(system)
    if second is not None:
        _clear_faults(second.system)
    chaos.wait_recovery_clocks()
    s = system.settings
    settle = max(
        3
        * max(
            s.protection_interval,
            s.reconciliation_interval,
            s.zombie_interval,
            s.recovery_interval,
            s.intermediate_state_grace_seconds,
        ),
        # a wave claimed as PostgreSQL died (a 20 s outage) is resumed only once it has
        # made no progress for the stall time: the audit must outlast that
        s.wave_stall_seconds + 3 * s.wave_dispatch_interval,
    )
    report = _audit(check_invariants, system.deps, float(settle), say)
    monitor_report = monitor.stop()
    if second is not None:
        venue = second.system.venue
        chaos.counts[f"{venue}_positions"] = [sum(positions_by_status(venue).values())]
        say(
            f"{venue}: {second.waves} waves beside the faults, positions by status "
            f"{positions_by_status(venue)}; audited on its own"
        )
        report = CombinedReport(
            [report, _audit(check_invariants, second.system.deps, float(settle), say)]
        )
        monitor_report = merge_gaps(monitor_report, second.stop(), second.system.venue)
    return ChaosResult(
        faults=chaos.faults,
        recovery=chaos.recovery,
        monitor=monitor_report,
        interfered=chaos.interfered,
        invariants=report,
        signals_without_outcome=_signals_without_outcome(),
        redeliveries=_redeliveries(),
        secrets_in_events=_secrets_in_events(),
        log=system.log,
        duration=duration,
        seed=seed,
        exchange=system.venue if second is None else "both",
        stack_kill_intact=chaos.stack_kill_intact,
        counts=chaos.counts,
        stop_fills_during_outages=outage_fill_outcomes(chaos.outage_fills),
    )


def _shifted(schedule: list[tuple[float, str]], by: float) -> list[tuple[float, str]]:
    """The remaining faults, each ``by`` seconds later (order and spacing kept)."""
    return [(at + by, kind) for at, kind in schedule]


def _clear_faults(system: DemoSystem) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(system.exchange_url + "/_sim/fault", method="DELETE")  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        json.loads(resp.read() or b"null")


def _audit(
    check: Callable[[Deps], Any], deps: Deps, settle: float, say: Callable[[str], None]
) -> Any:
    """Audit until clean or ``settle`` seconds pass: guardians converge within their intervals."""
    deadline = time.monotonic() + settle
    while True:
        report = check(deps)
        if (report.clean and _signals_without_outcome() == 0) or time.monotonic() >= deadline:
            return report
        say(f"audit: {len(report.violations)} violation(s) still open; waiting for guardians")
        time.sleep(1)  # the run's end waits on this: a guardian's repair is seen within 1 s


def print_result(console: Console, result: ChaosResult) -> None:
    table = Table(
        title=f"chaos report ({result.duration:.0f}s, seed {result.seed}, {result.exchange})",
        show_header=False,
    )
    dialects = (
        "binance and bybit dialects, one deployment"
        if result.exchange == "both"
        else (f"{result.exchange} dialect")
    )
    table.add_row("exchange", f"paper, {dialects}")
    table.add_row(
        "faults injected", ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items()))
    )
    gaps = result.longest_gaps()
    table.add_row(
        "longest without a live stop",
        f"engine-managed {gaps['engine_managed']:.2f}s; after outside interference "
        f"{gaps['after_interference']:.2f}s; between entry fill and stop "
        f"{gaps['entry_to_stop']:.2f}s (sampled every {result.monitor.interval}s, "
        f"{result.monitor.samples} samples, {result.monitor.failed_samples} failed)",
    )
    worst = result.monitor.worst(3)
    if worst:
        table.add_row(
            "longest gaps (symbol, kind, at)",
            "; ".join(f"{g['symbol']} {g['kind']} at {g['at']}s: {g['seconds']}s" for g in worst),
        )
    for kind, times in sorted(result.recovery.items()):
        # the first-tick measure is the venue's own figure (docs/reliability.md, per venue)
        label = (
            f"first trailing reaction on {result.exchange} (bound 1s)"
            if kind == "trailing_after_activation"
            else f"recovery after {kind}"
        )
        table.add_row(label, ", ".join(f"{t:.2f}s" for t in times))
    if result.stack_kill_intact:
        table.add_row(
            "intact after stack_kill",
            ", ".join("yes" if ok else "NO" for ok in result.stack_kill_intact),
        )
    for name, values in sorted(result.counts.items()):
        table.add_row(name.replace("_", " "), ", ".join(str(v) for v in values))
    table.add_row(
        "retries/redeliveries (events)",
        ", ".join(f"{k} {v}" for k, v in sorted(result.redeliveries.items())) or "0",
    )
    if result.stop_fills_during_outages:
        table.add_row(
            f"stops filled during outages on {result.exchange}",
            "; ".join(
                f"{f['symbol']} in {f['kind']}: {f['close_reason'] or f['status']}"
                for f in result.stop_fills_during_outages
            ),
        )
    table.add_row(
        "exited on their own (started again)", ", ".join(result.exited_on_their_own) or "none"
    )
    table.add_row("signals without an outcome", str(result.signals_without_outcome))
    table.add_row("events carrying a secret", str(result.secrets_in_events))
    table.add_row("invariant violations", str(len(result.invariants.violations)))
    console.print(table)
    for v in result.invariants.violations:
        console.print(f"  {v.kind}: {v.symbol or ''} {v.detail}", highlight=False)
