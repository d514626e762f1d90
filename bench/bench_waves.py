"""Signal wave to all N positions open with live stops, at 1, 2 and 4 workers.

Through the real processes: a wave of N signals is stored as the ingest stores it, its
``vigil.signals.process_wave`` task is enqueued (the moment its deadline is acted on), and
Celery worker subprocesses run the fan-out (``process_wave`` -> ``vigil.orders.open_position``
x N -> ``vigil.signals.advance_wave``) against the paper exchange, optionally with added
latency on every REST call. The clock stops when the last of the N positions is ``active``
(its ``position_status_changed`` event, written in the transaction that records the live
stop); the exchange is then checked to hold N positions, each with one stop for its size.

Prints, per (latency, workers, N): wave -> all N active, wave -> first active, one opening
(created -> active) p50/p99, openings/s, REST requests and weight per opening, and the
peak order count in any 10 s (Binance allows 300 orders/10 s per account).

Workers are nodes of ``--concurrency 1`` (``vigil up --workers K --concurrency 1``), warm
(markets loaded, pools open); every wave brings symbols new to them, so each opening pays
the per-symbol leverage/margin setup, as the first wave on a symbol does in production.

Run: python bench/bench_waves.py [--sizes 5,20,50] [--latencies 0,50] [--workers 1,2,4]
Starts its own embedded PostgreSQL, Redis and paper exchange in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from common import BenchEnv, Workers, bench_env, drain, machine, pct, wait_for_nodes, wait_until
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.config import get_settings
from core.db.models import Event, Position, Wave
from core.db.session import unit_of_work
from core.domain.signals import parse_frame
from core.events import EventType
from core.services.signals import store_frame
from core.services.waves import wave_params
from sim.state import SimOptions

PROCESS_WAVE = "vigil.signals.process_wave"
QUEUES = "signals,orders,maintenance"
BALANCE = "100000000"
WAVE_INTERVAL = 60


def wave_settings(largest: int) -> dict[str, str]:
    """Room for the largest wave: trades, open positions, exposure; a one-minute window."""
    return {
        "VIGIL_WAVE_INTERVAL": str(WAVE_INTERVAL),
        "VIGIL_WAVE_GRACE": "0",
        "VIGIL_MAX_TRADES_PER_WAVE": str(largest),
        "VIGIL_WAVE_BUFFER": "0",
        "VIGIL_MAX_OPEN_POSITIONS": str(largest * 2),
        "VIGIL_MAX_EXPOSURE_USDT": "100000000",
        "VIGIL_POSITION_SIZE_USDT": "200",
    }


@dataclass
class WaveRun:
    latency_ms: int
    workers: int
    n: int
    all_active_s: float
    completed_s: float
    first_active_s: float
    opening_p50_ms: float
    opening_p99_ms: float
    requests: int
    weight: int
    peak_orders_10s: int

    def row(self) -> str:
        return (
            f"{self.latency_ms:>5} ms {self.workers:>4} {self.n:>4}  "
            f"{self.all_active_s:8.2f} s {self.completed_s:8.2f} s {self.first_active_s:8.2f} s "
            f"{self.opening_p50_ms:8.0f} ms {self.opening_p99_ms:8.0f} ms "
            f"{self.n / self.all_active_s:8.1f} "
            f"{self.requests / self.n:7.1f} {self.weight / self.n:7.1f} {self.peak_orders_10s:6}"
        )


HEADER = (
    "latency  wrk    N  wave->all   wave done   wave->1st   open p50    open p99   open/s"
    "  req/pos  wgt/pos  ord/10s"
)


def store_wave(symbols: list[str], tag: str) -> int:
    """Store N signals in one wave whose deadline has just passed (as the ingest would)."""
    now = datetime.now(UTC)
    at = now - timedelta(seconds=WAVE_INTERVAL + 1)
    frame = {
        "type": "signals",
        "signals": [
            {
                "id": f"{tag}-{i}",
                "symbol": symbol,
                "exchange": "binance",
                "action": "BUY",
                "score_week": 90 - i * 0.01,
                "score_month": 50,
                "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            for i, symbol in enumerate(symbols)
        ],
    }
    report = store_frame(
        parse_frame(json.dumps(frame), now=now), now=now, params=wave_params(get_settings())
    )
    wave_ids = {stored.wave_id for stored in report.stored}
    assert len(report.stored) == len(symbols) and len(wave_ids) == 1, report
    return wave_ids.pop()


def status_counts() -> dict[str, int]:
    with unit_of_work() as s:
        statuses = list(s.scalars(select(Position.status)))
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def peak_orders(requests: list[dict[str, Any]], window_ms: int = 10_000) -> int:
    """Most order placements (entry, stop) in any ``window_ms``, as Binance counts them."""
    times = sorted(
        r["time"]
        for r in requests
        if r["method"] == "POST" and r["path"].split("?")[0].endswith(("/order", "/algoOrder"))
    )
    window: deque[int] = deque()
    peak = 0
    for t in times:
        window.append(t)
        while window[0] <= t - window_ms:
            window.popleft()
        peak = max(peak, len(window))
    return peak


def check_exchange(env: BenchEnv, n: int) -> None:
    """Every position the database calls active is on the exchange with one full stop."""
    with unit_of_work() as s:
        held_db = {p.symbol: p.quantity for p in s.scalars(select(Position))}
    state = env.sim.state()
    held = {
        p["symbol"]: abs(Decimal(p["positionAmt"]))
        for p in state["positions"]
        if Decimal(p["positionAmt"]) != 0
    }
    stops: dict[str, list[Decimal]] = {}
    for order in state["open_algo_orders"]:
        stops.setdefault(order["symbol"], []).append(Decimal(order["quantity"]))
    if len(held) != n or held != held_db or any(stops.get(s) != [q] for s, q in held.items()):
        raise RuntimeError(f"exchange does not match: {held} vs {held_db}, stops {stops}")


def run_wave(
    env: BenchEnv, celery: Any, symbols: list[str], latency_ms: int, workers: int, tag: str
) -> WaveRun:
    n = len(symbols)
    env.truncate()
    env.sim.reset(balance=BALANCE)
    if latency_ms:
        env.sim.fault("*", "latency", latency_ms=latency_ms)
    wave_id = store_wave(symbols, tag)
    first_request = env.request_index()

    enqueued = time.time()
    celery.send_task(PROCESS_WAVE, args=[wave_id])
    wait_until(
        lambda: status_counts().get("active", 0) == n or _failed(status_counts()),
        300,
        f"{n} positions active",
    )
    counts = status_counts()
    if counts.get("active", 0) != n:
        raise RuntimeError(f"wave did not open all {n}: {counts}")

    with unit_of_work() as s:
        created = event_times(s, select(Event).where(Event.type == EventType.POSITION_CREATED))
        activated = event_times(
            s,
            select(Event).where(
                Event.type == EventType.POSITION_STATUS_CHANGED,
                Event.data["to_status"].astext == "active",
            ),
        )
    check_exchange(env, n)
    completed = wait_until(lambda: wave_completed_at(wave_id), 60, "the wave completed")
    assert completed is not None
    drain(celery, "signals", workers * 2)  # the last advance steps ran: the tables are quiet
    requests = env.requests_since(first_request)
    openings = [(activated[pid] - created[pid]) * 1e3 for pid in activated]
    return WaveRun(
        latency_ms=latency_ms,
        workers=workers,
        n=n,
        all_active_s=max(activated.values()) - enqueued,
        completed_s=completed - enqueued,
        first_active_s=min(activated.values()) - enqueued,
        opening_p50_ms=pct(openings, 0.5),
        opening_p99_ms=pct(openings, 0.99),
        requests=len(requests),
        weight=sum(int(r["weight"]) for r in requests),
        peak_orders_10s=peak_orders(requests),
    )


def wave_completed_at(wave_id: int) -> float | None:
    with unit_of_work() as s:
        wave = s.get(Wave, wave_id)
        assert wave is not None
        done = wave.status == "completed" and wave.processed_at is not None
        return wave.processed_at.timestamp() if done and wave.processed_at else None


def event_times(session: Session, query: Select[Event]) -> dict[int, float]:
    """Position id -> when its event was written (``clock_timestamp()``, epoch seconds)."""
    return {
        e.position_id: e.created_at.timestamp()
        for e in session.scalars(query)
        if e.position_id is not None
    }


def _failed(counts: dict[str, int]) -> bool:
    return bool(counts.get("failed") or counts.get("rolled_back"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,50", help="wave sizes N")
    parser.add_argument("--latencies", default="0,50", help="added exchange latency, ms")
    parser.add_argument("--workers", default="1,2,4", help="worker node counts")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    latencies = [int(v) for v in args.latencies.split(",")]
    worker_counts = [int(v) for v in args.workers.split(",")]

    per_set = len(latencies) * sum(sizes) + 2 * max(worker_counts)
    options = SimOptions(seed=1, scenario="frozen", tick_interval=1.0, synthetic_symbols=per_set)
    print(machine())
    with bench_env(options, **wave_settings(max(sizes))) as env:
        from tasks.app import create_app

        celery = create_app(get_settings())
        print(f"exchange latency added to every REST call; {options.synthetic_symbols} symbols")
        print(HEADER)
        for workers in worker_counts:
            pool = Workers(env.env)
            try:
                pool.start(workers, QUEUES, prefix=f"w{workers}x")
                wait_for_nodes(celery, workers)
                drain(celery, "maintenance", workers * 2)
                fresh = iter(f"SIM{i:03d}USDT" for i in range(per_set))
                # warm-up: each node loads markets and opens its pools; not reported
                run_wave(env, celery, [next(fresh) for _ in range(2 * workers)], 0, workers, "w")
                for latency in latencies:
                    for n in sizes:
                        symbols = [next(fresh) for _ in range(n)]
                        tag = f"k{workers}-l{latency}-n{n}"
                        print(run_wave(env, celery, symbols, latency, workers, tag).row())
            finally:
                pool.stop()


if __name__ == "__main__":
    main()
