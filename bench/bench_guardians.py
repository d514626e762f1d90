"""Exchange requests and Binance request weight per guardian cycle, and per minute at rest.

Positions are opened through the engine's real opening path (entry, fill, stop, trailing
row) on a paper exchange listing 500 synthetic contracts, up to 5, 50 and 500 at once.
At each level, counted in the simulator's own request log (weights from Binance's table):

* one cycle each of protection, reconciliation and zombie cleanup (the services the beat
  tasks call): REST requests by endpoint, weight, and the cycle's wall time p50 — the
  requests must stay flat in the number of positions;
* the steady state: every periodic task in ``beat_schedule.build_schedule`` run once, the
  way a worker runs it (Celery ``apply``, with anything it enqueues run inline), its weight
  scaled by its default cadence to weight per minute, and the sum compared with Binance's
  limits (2,400 weight/min per IP; 1,200 orders/min and 300 orders/10 s per account).
  The market is quiet (prices frozen): no stop moves, no closes, and no tick leaves a
  band, so the trailing sweep finds every heartbeat stale (measured in that state: an
  upper bound, since a position it woke is skipped by the next sweep). The ingest's streams are
  WebSockets (no request weight); ccxt.pro keeps the listen key alive with one PUT
  (weight 1) every 20-30 min.

Run: python bench/bench_guardians.py [--levels 5,50,500] [--repeats 5]
Starts its own embedded PostgreSQL, Redis and paper exchange in a temporary directory.
"""

from __future__ import annotations

import argparse
import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from common import BenchEnv, bench_env, machine, pct
from sqlalchemy import text

from core.config import get_settings
from core.db.session import unit_of_work
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.zombies import cleanup_zombies
from sim.state import SimOptions

IP_WEIGHT_PER_MINUTE = 2400
ORDERS_PER_MINUTE = 1200
OPENERS = 4  # threads opening positions for the set-up (not measured)


@dataclass
class Cost:
    requests: int
    weight: int
    orders: int
    endpoints: Counter[str]


def cost_of(env: BenchEnv, run: Callable[[], Any]) -> tuple[Cost, float, Any]:
    """What ``run`` asked of the exchange, how long it took, and what it returned."""
    first = env.request_index()
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    log = env.requests_since(first)
    endpoints = Counter(f"{r['method']} {r['path'].split('?')[0]}" for r in log)
    orders = sum(
        1
        for r in log
        if r["method"] == "POST" and r["path"].split("?")[0].endswith(("/order", "/algoOrder"))
    )
    return Cost(len(log), sum(int(r["weight"]) for r in log), orders, endpoints), elapsed, result


def open_positions(env: BenchEnv, symbols: list[str]) -> None:
    """Open one long per symbol through the real opening service, a few at a time."""
    local = threading.local()

    def open_one(symbol: str) -> None:
        if not hasattr(local, "deps"):
            local.deps = env.deps()
        deps: Deps = local.deps
        with unit_of_work() as s:
            position = create_position(s, NewPosition("binance", symbol, "long"))
            if position is None:
                raise RuntimeError(f"{symbol} already has a position")
            pid = position.id
        outcome = open_position(deps, pid)
        if outcome is not OpenOutcome.ACTIVE:
            raise RuntimeError(f"opening {symbol} ended {outcome}")

    with ThreadPoolExecutor(OPENERS) as pool:
        list(pool.map(open_one, symbols))


def guardian_cycles(env: BenchEnv, deps: Deps, positions: int, repeats: int) -> None:
    cycles: dict[str, Callable[[], Any]] = {
        "protection": lambda: check_protection(deps),
        "reconciliation": lambda: reconcile_positions(deps),
        "zombie cleanup": lambda: cleanup_zombies(deps),
    }
    for name, run in cycles.items():
        costs, times, results = [], [], []
        for _ in range(repeats):
            cost, elapsed, result = cost_of(env, run)
            costs.append(cost)
            times.append(elapsed)
            results.append(result)
        if any(c.endpoints != costs[0].endpoints for c in costs):
            print(f"  note: {name} cycles differed: {[dict(c.endpoints) for c in costs]}")
        cost = costs[0]
        endpoints = ", ".join(f"{k} x{v}" for k, v in sorted(cost.endpoints.items()))
        print(
            f"{positions:>5} positions  {name:<15} {cost.requests:>3} requests  "
            f"weight {cost.weight:>3}  wall p50 {pct(times, 0.5) * 1e3:7.1f} ms  "
            f"({endpoints})  -> {summary(results[-1])}"
        )


def summary(report: Any) -> str:
    fields = (
        "healthy",
        "stops_placed",
        "exchange_positions",
        "db_positions",
        "actions",
        "open_orders",
        "detected",
    )
    return ", ".join(f"{f}={getattr(report, f)}" for f in fields if hasattr(report, f))


def steady_state(env: BenchEnv, positions: int) -> None:
    """Every beat task once, scaled by its cadence: request weight per minute at rest."""
    from beat_schedule import build_schedule
    from tasks.app import TASK_MODULES, app

    for module in TASK_MODULES:  # a worker imports them at start; so does this process
        importlib.import_module(module)
    app.conf.task_always_eager = True  # what a task enqueues (sweep -> on_price) runs inline
    schedule = build_schedule(get_settings())

    def run(entry: dict[str, Any]) -> Any:
        return app.tasks[entry["task"]].apply(kwargs=entry["kwargs"])

    for entry in schedule.values():  # warm-up: each task's first run loads what it caches
        run(entry)
    # a quiet market one sweep interval after the last wake: no tick left any band, so every
    # trailing heartbeat is older than the interval and the sweep wakes every position
    with unit_of_work() as s:
        s.execute(
            text("UPDATE trailing_stops SET heartbeat_at = now() - make_interval(secs => :s)"),
            {"s": 2 * get_settings().trailing_sweep_interval},
        )
    total_weight = total_orders = 0.0
    lines = []
    for name, entry in schedule.items():
        cost, elapsed, result = cost_of(env, partial(run, entry))
        per_minute = 60.0 / float(entry["schedule"])
        total_weight += cost.weight * per_minute
        total_orders += cost.orders * per_minute
        state = "ok" if result.successful() else f"FAILED: {result.result!r}"
        lines.append(
            f"    {name:<30} every {entry['schedule']:>6.0f} s  {cost.requests:>3} req  "
            f"weight {cost.weight:>3}/run  {cost.weight * per_minute:6.1f}/min  "
            f"{elapsed * 1e3:7.1f} ms  {state}"
        )
    print(f"{positions:>5} positions  steady state, every beat task at its default cadence:")
    print("\n".join(lines))
    print(
        f"    total: {total_weight:.1f} weight/min = {total_weight / IP_WEIGHT_PER_MINUTE:.1%} "
        f"of {IP_WEIGHT_PER_MINUTE}/min per IP; {total_orders:.1f} orders/min "
        f"(limit {ORDERS_PER_MINUTE}/min)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="5,50,500", help="open positions at each level")
    parser.add_argument("--repeats", type=int, default=5, help="cycles measured per level")
    args = parser.parse_args()
    levels = sorted(int(v) for v in args.levels.split(","))

    options = SimOptions(
        seed=1, scenario="frozen", tick_interval=1.0, synthetic_symbols=max(levels)
    )
    options.symbols = ["BTCUSDT"]  # the synthetic contracts plus one
    print(machine())
    with bench_env(options, VIGIL_MAX_OPEN_POSITIONS=str(max(levels))) as env:
        env.sim.reset(balance="100000000")
        deps = env.deps()
        symbols = [f"SIM{i:03d}USDT" for i in range(max(levels))]
        opened = 0
        for level in levels:
            started = time.perf_counter()
            open_positions(env, symbols[opened:level])
            print(
                f"(set-up: opened {level - opened} positions in "
                f"{time.perf_counter() - started:.1f} s)"
            )
            opened = level
            guardian_cycles(env, deps, level, args.repeats)
            steady_state(env, level)


if __name__ == "__main__":
    main()
