"""What the durable record costs: event writes, and database growth per position lifecycle.

Prints:
  * event write cost: one event per transaction (commit latency p50/p99) and the marginal
    cost of an event added to a transaction that already exists (how every state change
    writes its event);
  * events table bytes per event (heap + indexes);
  * database growth per position lifecycle (open with stop, close), over every table,
    measured through the real services against the paper exchange;
  * the Celery round trip of a no-op task on the ``stops`` queue, for comparison with the
    price path's latency (what part of tick-to-order is the queue);
  * retention: ``--purge`` events aged past the retention (bulk-inserted with old
    timestamps, 1 % critical ones kept longer) removed by the ``events_retention`` task's
    own ``purge_events``: rows per second, time per 10,000-row batch, and what the table
    looks like afterwards (space is reused by new rows after autovacuum, not returned).

Run: python bench/bench_storage.py [--events 5000] [--lifecycles 30] [--pings 300]
     [--purge 200000]
Starts its own embedded PostgreSQL, Redis and paper exchange in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import Workers, bench_env, pct, ping_round_trips
from sqlalchemy import text

from core.config import get_settings
from core.db.session import unit_of_work
from core.events import EventContext, EventType, record
from core.services.closing import close_position
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from sim.state import SimOptions


def bench_events(n: int) -> None:
    ctx = EventContext(exchange="binance", symbol="BTCUSDT", correlation_id="bench")
    per_commit = []
    for i in range(n):
        started = time.perf_counter()
        with unit_of_work() as s:
            record(s, EventType.TRAILING_STOP_UPDATED, ctx=ctx, old_stop="1.0", new_stop=str(i))
        per_commit.append(time.perf_counter() - started)
    print(
        f"event, own transaction: p50 {pct(per_commit, 0.5) * 1e3:.2f} ms  "
        f"p99 {pct(per_commit, 0.99) * 1e3:.2f} ms  ({n} events)"
    )

    batch = 50
    with_events: list[float] = []
    without: list[float] = []
    for i in range(n // batch):
        for target, count in ((with_events, batch), (without, 0)):
            started = time.perf_counter()
            with unit_of_work() as s:
                s.execute(text("SELECT 1"))
                for j in range(count):
                    record(s, EventType.TRAILING_STOP_UPDATED, ctx=ctx, seq=i * batch + j)
            target.append(time.perf_counter() - started)
    marginal = (statistics.mean(with_events) - statistics.mean(without)) / batch
    print(f"event added to an existing transaction: {marginal * 1e6:.0f} us marginal")

    with unit_of_work() as s:
        size = s.execute(text("SELECT pg_total_relation_size('events')")).scalar_one()
        count = s.execute(text("SELECT count(*) FROM events")).scalar_one()
    print(f"events table: {size / count:.0f} bytes per event (heap + indexes, {count} rows)")


def database_bytes() -> int:
    with unit_of_work() as s:
        return int(s.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def table_bytes() -> int:
    with unit_of_work() as s:
        return int(
            s.execute(
                text(
                    "SELECT sum(pg_total_relation_size(quote_ident(tablename))) "
                    "FROM pg_tables WHERE schemaname = 'public'"
                )
            ).scalar_one()
        )


def bench_lifecycles(deps: Deps, n: int) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    before_rows = table_bytes()
    with unit_of_work() as s:
        events_before = s.execute(text("SELECT count(*) FROM events")).scalar_one()
    durations = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        started = time.perf_counter()
        with unit_of_work() as s:
            position = create_position(s, NewPosition("binance", symbol, "long"))
            assert position is not None
            pid = position.id
        assert open_position(deps, pid) is OpenOutcome.ACTIVE
        close_position(deps, pid, "bench")
        durations.append(time.perf_counter() - started)
    with unit_of_work() as s:
        events_after = s.execute(text("SELECT count(*) FROM events")).scalar_one()
    grown = table_bytes() - before_rows
    print(
        f"position lifecycle (open + stop + close) through the services: "
        f"p50 {pct(durations, 0.5) * 1e3:.0f} ms, "
        f"{(events_after - events_before) / n:.1f} events, "
        f"~{grown / n / 1024:.1f} KiB of table+index growth per lifecycle"
    )


def bench_pings(env: dict[str, str], n: int) -> None:
    workers = Workers(env)
    workers.start(1, "stops")
    try:
        from tasks.app import create_app

        app = create_app(get_settings())
        rtts = ping_round_trips(app, n)
        print(
            f"celery no-op round trip on 'stops' (send -> run -> result): "
            f"p50 {pct(rtts, 0.5) * 1e3:.1f} ms  p99 {pct(rtts, 0.99) * 1e3:.1f} ms  ({n} tasks)"
        )
    finally:
        workers.stop()


def bench_retention(n: int) -> None:
    from datetime import UTC, datetime

    from core.services.retention import purge_events

    with unit_of_work() as s:
        s.execute(
            text(
                "INSERT INTO events (type, severity, exchange, symbol, data, created_at) "
                "SELECT 'trailing_stop_updated', "
                "       CASE WHEN g % 100 = 0 THEN 'critical' ELSE 'info' END, "
                "       'binance', 'BTCUSDT', jsonb_build_object('seq', g), "
                "       now() - interval '120 days' + g * interval '1 millisecond' "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": n},
        )
    size_before = _events_size()
    batches: list[float] = []
    started = time.perf_counter()
    deleted = 0
    while True:
        t0 = time.perf_counter()
        result = purge_events(
            datetime.now(UTC), keep_days=90, keep_critical_days=365, max_batches=1
        )
        batches.append(time.perf_counter() - t0)
        deleted += result.deleted
        if result.deleted < 10_000:
            break
    total = time.perf_counter() - started
    with unit_of_work() as s:
        kept = s.execute(
            text("SELECT count(*) FROM events WHERE created_at < now() - interval '90 days'")
        ).scalar_one()
    print(
        f"retention: purged {deleted} of {n} old events in {total:.1f} s "
        f"({deleted / total:,.0f} rows/s), batch of 10,000 p50 {pct(batches, 0.5) * 1e3:.0f} ms "
        f"p99 {pct(batches, 0.99) * 1e3:.0f} ms; {kept} critical kept; events table "
        f"{size_before / 2**20:.1f} -> {_events_size() / 2**20:.1f} MiB before vacuum"
    )


def _events_size() -> int:
    with unit_of_work() as s:
        return int(s.execute(text("SELECT pg_total_relation_size('events')")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--lifecycles", type=int, default=30)
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--purge", type=int, default=200_000)
    args = parser.parse_args()

    with bench_env(SimOptions(seed=1, scenario="frozen", tick_interval=1.0)) as env:
        print(f"machine: {os.cpu_count()} cores; embedded PostgreSQL 18 (fsync on)")
        bench_events(args.events)
        bench_lifecycles(env.deps(), args.lifecycles)
        bench_pings(env.env, args.pings)
        bench_retention(args.purge)


if __name__ == "__main__":
    main()
