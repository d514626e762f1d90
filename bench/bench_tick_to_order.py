"""Benchmark of the price path: from an exchange tick to the trailing stop order it requires.

Everything is real: the paper exchange (its own process, so it does not share the
ingest's interpreter; mark prices on the all-market WebSocket stream), the ingest's price
stream component (ccxt.pro, in this process), Redis (coalescing records, pending flags,
bands, broker), PostgreSQL, and Celery worker subprocesses as production runs them: one node
on ``stops`` (``--concurrency`` processes) and one on ``orders`` (the settles of stops that
fire).

For each (positions, feed rate): open N long positions (real openings, stop on the
exchange), let the sweep publish their bands, lift every price 2 % so every trailing stop
activates, then let the prices random-walk (``--volatility``, annualised) for
``--seconds`` and measure:

* tick-to-order latency p50/p99/max: from the simulator's timestamp of the first tick that
  left the band (``E`` of the mark price event, carried through the coalescing record into
  the move's ``trailing_stop_updated`` event) to the simulator's request-log time of the
  new stop's ``POST /fapi/v1/algoOrder``;
* ticks/s received and handled by the one ingest, its CPU share, and the ratio of price
  tasks queued to ticks received (coalescing and bands at work); the slowest moves with
  when they happened (a tail made of one burst shows as one cluster);
* the ``stops`` worker's CPU per stop move: the CPU of its process tree (main process and
  pool children, ``/proc/<pid>/stat`` through psutil) from the window's start until the queue
  is drained, divided by the moves recorded meanwhile (every task counts: those that moved
  nothing too);
* with ``--sweep``: the worker CPU per position of one ``vigil.stops.trailing_sweep`` when
  nothing changes (after the warm-up, every heartbeat made stale so every position is due);
* the Celery no-op round trip on the ``stops`` queue (send -> run -> result), for comparison.

``--compare REF`` measures the workers of a git revision too (exported with ``git archive``
and put first on the workers' path), alternating with the working tree scenario by scenario
(``--rounds`` times), so the before/after ratio comes from one run on one machine. What
runs in this process (the ingest component, the openings, the first sweep) is the working
tree's on both sides.

The per-symbol rate limit is set to 0 by default (``--min-update-interval``): a deferred
move's delay is the rate limit's policy, not the path's latency.

Run: python bench/bench_tick_to_order.py [--positions 100,500] [--rates 1,10]
     [--seconds 30] [--concurrency 2] [--volatility 2.0] [--profile-worker] [--sweep]
     [--compare REF] [--rounds 1] [--pings 200]
Starts its own embedded PostgreSQL and Redis in a temporary directory. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import redis.asyncio as aioredis
from common import (
    ROOT,
    TABLES,
    code_env,
    embedded_stores,
    export_revision,
    machine,
    pct,
    ping_round_trips,
    serve_sim,
    wait_until,
)
from sqlalchemy import select, text
from tto_exchange import SimProcess, latencies, max_algo_id
from tto_results import Result, summary
from worker_cost import idle_rate, measure_sweep, moves_since, own_cpu, tree_cpu

from core.clock import SYSTEM_CLOCK
from core.config import Settings, get_settings, load_settings
from core.db.models import Position, TrailingStop
from core.db.session import unit_of_work
from core.exchange.factory import build_pro_exchange
from core.ingest.prices import PriceStream
from core.services import bands, price_path
from core.services.deps import Deps, build_adapter
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tasks.sender import celery_sender

# --- the ingest component in a thread --------------------------------------------------------


class Ingest:
    """``PriceStream`` (the ingest's price component) on its own event loop thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.stream: PriceStream | None = None
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.thread.start()
        wait_until(lambda: self.stream is not None and self.stream.stats.frames > 0, 60, "ticks")

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        s = self.settings
        pro = build_pro_exchange(
            s.exchange, url=s.exchange_url, api_key="paper", api_secret="paper", timeout_ms=20000
        )
        url = str(s.redis_url)
        async_redis = aioredis.Redis.from_url(url)
        sync_redis = redis.Redis.from_url(url)
        self.stream = PriceStream(s, "binance", pro, async_redis, sync_redis, celery_sender(s))
        try:
            await self.stream.run(self.stop_event)
        finally:
            await pro.close()
            await async_redis.aclose()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


# --- a scenario ------------------------------------------------------------------------------


def ingest_dispatch(args: argparse.Namespace, code: Path) -> dict[str, int]:
    """How the ingest groups a frame's symbols into price tasks, per side. ``--compare``'s:
    ``--ref-price-task-batch`` symbols per task (1 by default: one task per symbol, what a
    revision before ``vigil.stops.on_prices`` understands), every frame of two symbols or more
    spread over the slots (``--ref-price-task-spread-from`` 1, the dispatch before
    ``VIGIL_PRICE_TASK_SPREAD_FROM``); the working tree's: the options or the settings."""
    if code != ROOT:
        batch, spread_from = args.ref_price_task_batch, args.ref_price_task_spread_from
    else:
        settings = get_settings()
        batch = args.price_task_batch or settings.price_task_batch
        spread_from = args.price_task_spread_from or settings.price_task_spread_from
    return {"price_task_batch": batch, "price_task_spread_from": spread_from}


def worker_env(settings: Settings, home: Path, args: argparse.Namespace) -> dict[str, str]:
    return dict(
        os.environ,
        VIGIL_HOME=str(home),
        VIGIL_DATABASE_URL=str(settings.database_url),
        VIGIL_REDIS_URL=str(settings.redis_url),
        VIGIL_EXCHANGE="paper",
        VIGIL_EXCHANGE_URL=settings.exchange_url,
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL=str(args.min_update_interval),
        VIGIL_EXCHANGE_TIMEOUT_MS="20000",
        VIGIL_LOG_LEVEL=os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        VIGIL_PRICE_TASK_BATCH=str(settings.price_task_batch),
    )


def start_worker(
    env: dict[str, str],
    args: argparse.Namespace,
    tag: str,
    home: Path,
    code: Path,
    queues: str = "stops",
) -> Any:
    """A worker node running ``code`` (the working tree or a ``--compare`` revision); the
    ``stops`` queue has its own (latency-critical), as in production."""
    argv = [sys.executable]
    if args.profile_worker and queues == "stops":  # profiled: where a price task spends CPU
        argv += [str(Path(__file__).with_name("cpu_profile.py")), str(home / f"worker-{tag}.prof")]
        pool = ["--pool", "solo"]
    elif queues == "stops":
        pool = ["--pool", "prefork", "--concurrency", str(args.concurrency)]
    else:
        pool = ["--pool", "prefork", "--concurrency", "1"]
    argv += ["-m", "shell.cli", "worker", "--queues", queues, "--name", tag, *pool]
    log = (home / f"worker-{tag}.log").open("ab")
    return subprocess.Popen(
        argv, env=code_env(env, code), cwd=code, start_new_session=True, stdout=log, stderr=log
    )


def stop_worker(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)  # warm shutdown: a profile is written
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def open_positions(settings: Settings, client: redis.Redis, symbols: list[str]) -> list[int]:
    """Real openings (entry, fill, stop), four symbols at a time, one exchange client each."""
    local = threading.local()

    def open_one(symbol: str) -> int | None:
        if not hasattr(local, "deps"):
            local.deps = Deps(settings, build_adapter(settings), client, SYSTEM_CLOCK)
        with unit_of_work() as s:
            position = create_position(s, NewPosition("binance", symbol, "long"))
            assert position is not None
            pid = position.id
        return pid if open_position(local.deps, pid) is OpenOutcome.ACTIVE else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return [pid for pid in pool.map(open_one, symbols) if pid is not None]


def active_trailing(ids: list[int]) -> int:
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(text("count(*)"))
                .select_from(TrailingStop)
                .where(TrailingStop.position_id.in_(ids), TrailingStop.state == "active")
            )
            or 0
        )


def run_scenario(
    n: int,
    rate: float,
    args: argparse.Namespace,
    base: Settings,
    home: Path,
    variant: tuple[str, Path],
) -> Result:
    sim = SimProcess(n, 1.0 / rate, home)
    worker = settler = None
    ingest = None
    try:
        name, code = variant
        settings, rds, deps, symbols = fresh_book(sim, n, args, base, code)
        ids = open_book(settings, rds, symbols)
        env = worker_env(settings, home, args)
        tag = f"{n}x{rate:g}-{'ref' if code != ROOT else 'wt'}"
        worker = start_worker(env, args, f"stops{tag}", home, code)
        settler = start_worker(env, args, f"orders{tag}", home, code, queues="orders")
        ingest = Ingest(settings)
        send = celery_sender(settings)
        activate_every_stop(sim, deps, rds, send, symbols, ids)
        sweep = measure_sweep(send, rds, worker.pid, ids) if args.sweep else None
        idle_cpu = idle_rate(worker.pid, 3.0)  # what the worker spends doing nothing
        sim.admin("POST", "/_sim/volatility", {"volatility": args.volatility, "drift": 0})
        window = measure_window(sim, ingest, rds, worker.pid, args.seconds)
        return Result(
            name,
            n,
            rate,
            window.elapsed,
            window.ticks / window.elapsed,
            window.outside / window.elapsed,
            window.queued / max(1, window.ticks),
            window.ingest_cpu,
            len(window.latencies),
            closed_positions(),
            window.latencies,
            window.worker_cpu,
            window.worker_moves,
            idle_cpu * window.worker_span,
            sweep,
            window.worker_main_cpu,
        )
    finally:
        if ingest is not None:
            ingest.close()
        for proc in (worker, settler):
            if proc is not None:
                stop_worker(proc)
        sim.stop()


def fresh_book(
    sim: SimProcess, n: int, args: argparse.Namespace, base: Settings, code: Path
) -> tuple[Settings, redis.Redis, Deps, list[str]]:
    """An empty exchange, Redis and database; the ``n`` symbols to trade."""
    sim.admin("POST", "/_sim/reset", {"balance": "1000000000"})
    settings = base.model_copy(update={"exchange_url": sim.url, **ingest_dispatch(args, code)})
    rds = redis.Redis.from_url(str(settings.redis_url))
    rds.flushall()
    with unit_of_work() as s:
        s.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    deps = Deps(settings, build_adapter(settings), rds, SYSTEM_CLOCK)
    return settings, rds, deps, [f"SIM{i:03d}USDT" for i in range(n)]


def open_book(settings: Settings, rds: redis.Redis, symbols: list[str]) -> list[int]:
    """A long position opened for real on every symbol; the ids of those that opened."""
    started = time.perf_counter()
    ids = open_positions(settings, rds, symbols)
    print(f"  opened {len(ids)} positions in {time.perf_counter() - started:.1f} s", flush=True)
    return ids


def activate_every_stop(
    sim: SimProcess,
    deps: Deps,
    rds: redis.Redis,
    send: Any,
    symbols: list[str],
    ids: list[int],
) -> None:
    """The warm-up, not measured: bands published, every price +2 % so every trailing stop
    activates, the queue drained."""
    price_path.sweep(deps, lambda ex, sym: send("vigil.stops.on_price", (ex, sym)))
    wait_until(lambda: all(bands.components(rds, "binance", s) for s in symbols), 120, "bands", 0.2)
    for symbol in symbols:
        sim.admin("POST", "/_sim/price", {"symbol": symbol, "price": "10.2"})
    wait_until(lambda: active_trailing(ids) >= len(ids) * 0.98, 180, "activation", 0.2)
    wait_until(lambda: rds.llen("stops") == 0, 120, "the queue to drain")
    time.sleep(1.0)  # the last activation's tasks finish


@dataclass
class Window:
    """What one measured window of random-walking prices cost and how fast it moved stops."""

    elapsed: float
    ticks: int
    outside: int
    queued: int
    ingest_cpu: float  # this process's CPU share (the ingest component)
    worker_cpu: float  # the stops worker's CPU seconds from the start to the drain
    worker_span: float
    worker_moves: int
    latencies: list[tuple[float, float]]
    worker_main_cpu: float  # of worker_cpu, the main process's (Celery's consumer)


def measure_window(
    sim: SimProcess, ingest: Ingest, rds: redis.Redis, worker_pid: int, seconds: float
) -> Window:
    """Let the prices walk for ``seconds``, then calm them and wait for the queues to drain."""
    log_from = sim.admin("GET", "/_sim/requests?since=999999999")["next"]
    algo_from = max_algo_id(sim)
    stats = ingest.stream.stats if ingest.stream else None
    assert stats is not None
    ticks0, outside0, queued0 = stats.ticks, stats.outside, stats.enqueued
    cpu0 = psutil.Process().cpu_times()
    worker_cpu0 = tree_cpu(worker_pid)
    worker_main0 = own_cpu(worker_pid)
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    cpu1 = psutil.Process().cpu_times()
    ticks, outside, queued = (
        stats.ticks - ticks0,
        stats.outside - outside0,
        stats.enqueued - queued0,
    )
    sim.admin("POST", "/_sim/volatility", {"volatility": 0, "drift": 0})
    wait_until(lambda: rds.llen("stops") == 0 and rds.llen("orders") == 0, 120, "drain")
    time.sleep(1.0)  # the last tasks finish
    worker_cpu = tree_cpu(worker_pid) - worker_cpu0
    worker_main = own_cpu(worker_pid) - worker_main0
    worker_span = time.time() - t0
    worker_moves = moves_since(datetime.fromtimestamp(t0, UTC))
    elapsed = t1 - t0
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
    lat = latencies(sim, log_from, algo_from, t0, t1)
    return Window(
        elapsed,
        ticks,
        outside,
        queued,
        cpu,
        worker_cpu,
        worker_span,
        worker_moves,
        lat,
        worker_main,
    )


def closed_positions() -> int:
    with unit_of_work() as s:
        return int(
            s.scalar(
                select(text("count(*)")).select_from(Position).where(Position.status == "closed")
            )
            or 0
        )


def noop_round_trip(
    settings: Settings, home: Path, args: argparse.Namespace, n: int
) -> list[float]:
    from tasks.app import create_app

    env = worker_env(settings, home, args)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shell.cli",
            "worker",
            "--queues",
            "stops",
            "--concurrency",
            "1",
            "--name",
            "ping",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        app = create_app(settings)
        return [seconds * 1000 for seconds in ping_round_trips(app, n)]
    finally:
        stop_worker(worker)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", default="100,500", help="comma-separated sizes")
    parser.add_argument("--rates", default="1,10", help="feed rates per symbol, Hz")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--volatility", type=float, default=2.0, help="annualised, 2.0 = 200 %%")
    parser.add_argument("--min-update-interval", type=float, default=0.0)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument(
        "--price-task-batch",
        type=int,
        default=0,
        help="symbols of a frame per price task on the working tree's side (default: the"
        " setting's; 1: one task per symbol); --compare's side: --ref-price-task-batch",
    )
    parser.add_argument(
        "--ref-price-task-batch",
        type=int,
        default=1,
        help="symbols per price task on --compare's side (default 1: one task per symbol, which"
        " every revision understands; more only for a revision with vigil.stops.on_prices)",
    )
    spread = "a frame spread over several price tasks from this many symbols (default: "
    parser.add_argument("--price-task-spread-from", type=int, default=0, help=spread + "setting)")
    parser.add_argument("--ref-price-task-spread-from", type=int, default=1, help=spread + "1)")
    parser.add_argument("--profile-worker", action="store_true", help="CPU-profile a solo worker")
    parser.add_argument(
        "--sweep", action="store_true", help="also time one trailing sweep with nothing to change"
    )
    parser.add_argument("--compare", metavar="REF", help="also measure the workers of REF")
    parser.add_argument("--rounds", type=int, default=1, help="runs per variant and scenario")
    return parser.parse_args()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-sim":
        serve_sim(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    args = parse_args()

    with embedded_stores(
        "vigil-bench-tto-",
        keep_home=args.profile_worker,
        VIGIL_POSITION_SIZE_USDT="20",
        VIGIL_TRAILING_MIN_UPDATE_INTERVAL=str(args.min_update_interval),
    ) as stores:
        home = stores.home
        base = load_settings()
        print(machine(), flush=True)
        print(
            f"window {args.seconds:.0f} s; volatility {args.volatility:.0%}/yr; "
            f"worker concurrency {args.concurrency}; min update interval "
            f"{args.min_update_interval} s",
            flush=True,
        )
        variants = [("working tree", ROOT)]
        if args.compare:
            variants.insert(0, (args.compare, export_revision(args.compare, home / "ref")))
        for n in (int(x) for x in args.positions.split(",")):
            for rate in (float(x) for x in args.rates.split(",")):
                print(f"- {n} positions @ {rate:g} Hz", flush=True)
                results: dict[str, list[Result]] = {name: [] for name, _ in variants}
                for _ in range(args.rounds):
                    for variant in variants:
                        result = run_scenario(n, rate, args, base, home, variant)
                        results[variant[0]].append(result)
                        print(result.line(), flush=True)
                if len(variants) > 1 or args.rounds > 1:
                    print(summary(results), flush=True)
        if args.pings:
            rtts = noop_round_trip(base, home, args, args.pings)
            print(
                f"celery no-op round trip on 'stops' (send -> run -> result): "
                f"p50 {statistics.median(rtts):.1f} ms  p99 {pct(rtts, 0.99):.1f} ms "
                f"({len(rtts)})"
            )
        if args.profile_worker:
            print(f"worker profiles in {home} (python -m pstats <file>)")


if __name__ == "__main__":
    main()
