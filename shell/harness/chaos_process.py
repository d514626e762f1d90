"""Chaos faults about processes and outages, beyond a single kill and restart.

- ``stack_kill``: SIGKILL of every process of the stack at once (workers, beat, ingest,
  paper exchange, signal source, the embedded PostgreSQL and Redis), as if the machine's
  supervisor itself had died; then the stack is started again on the same home, exactly
  as ``vigil up`` starts it. The paper account survives in its file, the database and Redis
  in their data directories; what an earlier life left (zombies, pid files) must not stop
  the new start.
- ``redis_outage`` / ``postgres_outage``: the server is killed and stays down for
  ``VIGIL_CHAOS_OUTAGE_SECONDS`` (default 20) before it is started again. While it is down,
  one active position's price is driven through its stop, so a stop fills during the
  outage; at the end it must be closed ``stop_triggered``, never ``phantom``
  (``stop_fills_during_outages`` in the report).
- ``ingest_loop_fault``: an exception injected into one loop of the running ingest
  (SIGUSR1 + ``VIGIL_HOME/ingest-fault``): its guard must restart it.

Each has a recovery clock, as the other faults do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from core.db import session as db_session
from core.db.models import Event, Position, TrailingStop
from core.db.session import unit_of_work
from core.domain.orders import STOP_PURPOSES
from core.exchange.client_ids import parse_client_id
from core.exchange.errors import ExchangeFailure
from shell.runtime.leftovers import is_alive
from shell.runtime.stack import Stack

if TYPE_CHECKING:
    from shell.harness.chaos_faults import Chaos

PROCESS_FAULT_KINDS = ("stack_kill", "redis_outage", "postgres_outage", "ingest_loop_fault")
INGEST_LOOPS = ("mark_prices", "user_data", "bands", "waves", "heartbeat", "signals")


def outage_seconds() -> float:
    return float(os.environ.get("VIGIL_CHAOS_OUTAGE_SECONDS", "20"))


def inject_process_fault(chaos: Chaos, kind: str) -> None:
    faults: dict[str, Callable[[Chaos], None]] = {
        "stack_kill": stack_kill,
        "redis_outage": redis_outage,
        "postgres_outage": postgres_outage,
        "ingest_loop_fault": ingest_loop_fault,
    }
    faults[kind](chaos)


def redis_outage(chaos: Chaos) -> None:
    server = chaos.stack.redis
    assert server is not None
    victim = position_with_a_live_stop(chaos)
    server.kill()
    chaos.say(f"Redis killed; down for {outage_seconds():.0f}s")
    _drive_through_its_stop(chaos, "redis_outage", victim)
    time.sleep(outage_seconds())
    server.start()
    chaos.say("Redis started again (same port, same append-only file)")
    chaos._clock("redis_outage", chaos._task_roundtrip)


def postgres_outage(chaos: Chaos) -> None:
    server = chaos.stack.postgres
    assert server is not None
    victim = position_with_a_live_stop(chaos)  # read while the database still answers
    server.kill()
    chaos.say(f"PostgreSQL killed; down for {outage_seconds():.0f}s")
    _drive_through_its_stop(chaos, "postgres_outage", victim)
    time.sleep(outage_seconds())
    since = time.monotonic()
    server.start()
    fresh_database_pool()
    chaos.say("PostgreSQL started again (recovers from its WAL)")
    chaos._clock("postgres_outage", chaos._heartbeat_after(since))


Victim = tuple[int, str, str, Decimal]  # position id, symbol, side, live stop's trigger


def position_with_a_live_stop(chaos: Chaos, attempts: int = 5) -> Victim | None:
    """The oldest active position of the venue the faults act on whose own stop is live on
    the exchange right now.

    The database alone is not enough: a position closed by hand (or stripped of its stop)
    moments ago is still ``active`` there until reconciliation's next cycle, and driving its
    price fills no stop; the engine then rightly settles it as the phantom it is. So the
    exchange is read too (retried: an injected exchange fault may be pending).
    """
    with unit_of_work() as s:
        rows = s.execute(
            select(Position.id, Position.symbol, Position.side)
            .where(
                Position.status == "active",
                Position.exchange == chaos.system.venue,
                Position.stop_price.is_not(None),
            )
            .order_by(Position.id)
        ).all()
    if not rows:
        return None
    for attempt in range(attempts):
        try:
            live = _live_own_stops(chaos)
            break
        except ExchangeFailure:
            time.sleep(0.5 * (attempt + 1))
    else:
        return None
    for position_id, symbol, side in rows:
        triggers = live.get((position_id, symbol))
        if triggers:
            # the stop nearest the price: crossing it closes the position
            return (position_id, symbol, side, max(triggers) if side == "long" else min(triggers))
    return None


def _live_own_stops(chaos: Chaos) -> dict[tuple[int, str], list[Decimal]]:
    """(position id, symbol) -> trigger prices of its live stops, where the exchange still
    holds a position on that symbol."""
    exchange = chaos.system.deps.exchange
    held = {p.symbol for p in exchange.positions()}
    live: dict[tuple[int, str], list[Decimal]] = {}
    for order in exchange.open_orders():
        ours = parse_client_id(order.client_id)
        if order.trigger_price is None or ours is None or ours.purpose not in STOP_PURPOSES:
            continue
        if order.symbol in held:
            live.setdefault((ours.position_id, order.symbol), []).append(order.trigger_price)
    return live


def _drive_through_its_stop(chaos: Chaos, kind: str, victim: Victim | None) -> None:
    """Move the price 1 % beyond the stop in 3 s: the stop fills while the store is down."""
    if victim is None:
        chaos.say(f"{kind}: no position with a live stop to drive through it")
        return
    position_id, symbol, side, stop = victim
    target = stop * (Decimal("0.99") if side == "long" else Decimal("1.01"))
    chaos.system.admin("/_sim/path", {"symbol": symbol, "target": str(target), "seconds": 3})
    chaos.outage_fills.append({"kind": kind, "position_id": position_id, "symbol": symbol})
    chaos.say(f"{symbol}'s price driven through its stop during the {kind}")


def fresh_database_pool() -> None:
    """Drop the harness's own pooled connections after PostgreSQL was killed and restarted.

    They died with the server, and a pooled connection is pinged only after it sat idle
    for a second (``core.db.session``): one the harness's clocks used a moment before the
    kill would fail the harness's next read with "server closed the connection".
    """
    db_session.reset_engine()


def outage_fill_outcomes(fills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How each position whose stop was driven through during an outage ended."""
    if not fills:
        return []
    with unit_of_work() as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(Position.id, Position.status, Position.close_reason).where(
                    Position.id.in_([f["position_id"] for f in fills])
                )
            )
        }
    return [
        {
            **fill,
            "status": rows[fill["position_id"]].status,
            "close_reason": rows[fill["position_id"]].close_reason,
        }
        for fill in fills
    ]


def ingest_loop_fault(chaos: Chaos) -> None:
    stack = chaos.stack
    sup = stack.supervisor
    assert sup is not None
    ingest = next(c for c in sup.children if c.name == "ingest")
    loops = [n for n in INGEST_LOOPS if n != "signals" or "VIGIL_SIGNAL_URL" in sup.env]
    loop = chaos.rng.choice(loops)
    (stack.home / "ingest-fault").write_text(loop)
    since = datetime.now(UTC)
    assert ingest.proc is not None
    os.kill(ingest.proc.pid, signal.SIGUSR1)
    chaos.say(f"exception injected into the ingest's {loop} loop")

    def restarted() -> bool:
        with unit_of_work() as s:
            return (
                s.scalar(
                    select(Event.id).where(
                        Event.type == "loop_restarted",
                        Event.created_at >= since,
                        Event.data["loop"].astext == loop,
                    )
                )
                is not None
            )

    chaos._clock("ingest_loop_fault", restarted)


def stack_kill(chaos: Chaos) -> None:
    old = chaos.stack
    started = time.monotonic()
    # the processes that act die first; what they left is what must come back, so it is
    # read (in the few ms) before the exchange and the storage die with them
    _kill_actors(old)
    before = (_database_book(), _exchange_book(chaos))
    _kill_everything(old)
    chaos.say("SIGKILL of every process of the stack; starting it again on the same home")
    new = Stack(old.settings, old.options)
    new.start_storage(chaos.say)
    fresh_database_pool()
    new.migrate()
    database_after = _database_book()
    sup = new.start_processes()
    exchange_after = _exchange_book(chaos, wait=30.0)
    _compare(chaos, before, (database_after, exchange_after))
    new.wait_for_worker()
    chaos.stack = new
    chaos.system.stack = new
    signal_url = sup.env.get("VIGIL_SIGNAL_URL")
    if signal_url:
        chaos.system.signal_admin_url = signal_url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    chaos.recovery.setdefault("stack_kill", []).append(time.monotonic() - started)
    chaos.say(f"stack up again after {time.monotonic() - started:.1f}s")


def _database_book() -> dict[str, Any]:
    """Open positions and their trailing state, as the database holds them."""
    with unit_of_work() as s:
        positions = s.execute(
            select(Position.id, Position.symbol, Position.quantity, Position.stop_price).where(
                Position.status == "active"
            )
        ).all()
        trailing = s.execute(
            select(
                TrailingStop.position_id,
                TrailingStop.state,
                TrailingStop.current_stop,
                TrailingStop.highest_price,
                TrailingStop.lowest_price,
                TrailingStop.update_count,
            )
        ).all()
    return {"positions": sorted(map(tuple, positions)), "trailing": sorted(map(tuple, trailing))}


def _exchange_book(chaos: Chaos, wait: float = 0.0) -> dict[str, Any]:
    """Positions (symbol, size) and stop triggers on the paper exchange."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = chaos.system.admin("/_sim/state")
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
    orders = [*state.get("open_algo_orders", []), *state.get("open_orders", [])]
    return {
        "positions": sorted(
            (p["symbol"], str(p.get("positionAmt") or p.get("size"))) for p in state["positions"]
        ),
        "stops": sorted(
            (o["symbol"], str(o["triggerPrice"]))
            for o in orders
            if o.get("triggerPrice") not in (None, "", "0")
        ),
    }


def _compare(chaos: Chaos, before: tuple[Any, Any], after: tuple[Any, Any]) -> None:
    """Say whether positions, stops and trailing state came back as they were."""
    names = ("database", "exchange")
    changed = [n for n, b, a in zip(names, before, after, strict=True) if b != a]
    counts = (
        f"{len(before[0]['positions'])} positions, {len(before[0]['trailing'])} trailing rows,"
        f" {len(before[1]['stops'])} stops"
    )
    if changed:
        chaos.say(f"stack_kill: {counts}; CHANGED across the restart: {', '.join(changed)}")
        chaos.say(f"  before {before}\n  after {after}")
    else:
        chaos.say(f"stack_kill: {counts}; all intact across the restart")
    chaos.stack_kill_intact.append(not changed)


def _kill_actors(stack: Stack) -> None:
    """SIGKILL every child but the paper exchange, and wait until they are gone."""
    assert stack.supervisor is not None
    actors = [  # the paper exchanges (sim, sim-bybit) stay: their book is read next
        c.proc for c in stack.supervisor.children if not c.name.startswith("sim") and c.proc
    ]
    for proc in actors:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(is_alive(p.pid) for p in actors):
        time.sleep(0.02)


def _kill_everything(stack: Stack) -> None:
    """kill -9 of every process, the supervisor's death included (its home lock drops)."""
    procs: list[Any] = []
    if stack.supervisor is not None:
        procs += [c.proc for c in stack.supervisor.children]
    procs += [s.proc for s in (stack.postgres, stack.redis) if s is not None]
    for proc in procs:
        if proc is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    # what dies with the supervisor: its lock, and its knowledge of its children (the
    # killed ones stay unreaped zombies, as after a real kill -9 of `vigil up`)
    if stack._home_lock is not None:
        stack._home_lock.release()
        stack._home_lock = None
    stack.supervisor = None
    stack.postgres = None
    stack.redis = None
