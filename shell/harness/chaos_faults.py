"""The fault injectors of a chaos run and the recovery clocks that time each fault.

``Chaos`` holds the running system and breaks it on demand (``inject``): workers killed at
chosen moments, Redis / PostgreSQL / the ingest restarted, exchange faults through
``/_sim/fault``, signals duplicated and reordered, acts by hand on the exchange. The faults
about whole processes and outages live in shell/harness/chaos_process.py. Each fault starts
a recovery clock: a thread that times how long the engine takes to come back.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from core.clock import SYSTEM_CLOCK
from core.db.models import Heartbeat, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.positions import INTERMEDIATE
from core.exchange.errors import ExchangeFailure
from shell.harness import chaos_death as death
from shell.harness.chaos_first_tick import trend_after_activation
from shell.harness.chaos_plan import FAULT_ENDPOINTS, MEASURED_KINDS, SYMBOLS
from shell.harness.chaos_process import (
    PROCESS_FAULT_KINDS,
    fresh_database_pool,
    inject_process_fault,
)
from shell.harness.demo import (
    AdminRefused,
    DemoSystem,
    _cancel_stop_by_hand,
    _close_by_hand,
    _price,
)
from shell.runtime.stack import Stack

INTERMEDIATE_VALUES = [s.value for s in INTERMEDIATE]


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
