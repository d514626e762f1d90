"""Benchmark of the ingest's price component: how many mark-price ticks one core handles.

The paper exchange (its own process) pushes the all-market mark-price stream of
``--symbols`` markets every ``--interval`` seconds: that is the offered load. The ingest's
price component (``core.ingest.prices.PriceStream``: the socket, the frame parser, the band
gate, the user-data stream beside it) runs in a process of its own against it, with
``--watched`` symbols holding a band (as open positions do) wide enough that no tick leaves it,
so what is measured is the cost of receiving and judging ticks, not of queueing work. For
each run it prints the ticks received per second and the CPU the process spent, and their
ratio: ticks per CPU-second, i.e. what one core would handle.

``--compare REF`` runs the same measurement on the code of a git revision (exported to a
temporary directory and put first on the consumer's path), alternating with the working
tree, so the before/after ratio comes from one run on one machine.

Run: python bench/bench_ingest.py [--symbols 2500] [--interval 0.05] [--watched 500]
     [--seconds 20] [--rounds 2] [--compare REF]
Starts its own embedded Redis. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from common import ROOT, code_env, cpu_seconds_self, export_revision, serve_sim


def consume(url: str, redis_url: str, seconds: float, warmup: float) -> None:
    """``--consume``: the price component against the sim; prints one JSON line of figures."""
    import redis
    import redis.asyncio as aioredis

    from core.config import load_settings
    from core.exchange.factory import build_pro_exchange
    from core.ingest.prices import PriceStream

    settings = load_settings(exchange="paper", exchange_url=url, redis_url=redis_url)

    async def run() -> dict[str, float]:
        pro = build_pro_exchange("paper", url=url, api_key="paper", api_secret="paper")
        async_redis = aioredis.Redis.from_url(redis_url)
        sync_redis = redis.Redis.from_url(redis_url)
        stream = PriceStream(
            settings, "binance", pro, async_redis, sync_redis, lambda name, args: None
        )
        stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stop))
        await asyncio.sleep(warmup)
        ticks0, cpu0, t0 = stream.stats.ticks, cpu_seconds_self(), time.monotonic()
        await asyncio.sleep(seconds)
        ticks1, cpu1, t1 = stream.stats.ticks, cpu_seconds_self(), time.monotonic()
        stop.set()
        await task
        await pro.close()
        await async_redis.aclose()
        sync_redis.close()
        return {"ticks": ticks1 - ticks0, "cpu": cpu1 - cpu0, "elapsed": t1 - t0}

    print(json.dumps(asyncio.run(run())), flush=True)


def publish_bands(redis_url: str, watched: int) -> None:
    """Bands no tick leaves, for ``watched`` symbols (the sim's synthetic SIM000USDT...)."""
    import redis

    from core.domain.bands import PriceBand
    from core.services import bands

    client = redis.Redis.from_url(redis_url)
    wide = PriceBand(Decimal("0.00000001"), Decimal("100000000"))
    for i in range(watched):
        bands.publish(client, "binance", f"SIM{i:03d}USDT", "trailing", wide)
    client.close()


@contextlib.contextmanager
def embedded_redis(home: Path) -> Iterator[str]:
    from core.endpoints import embedded_redis_url
    from shell.runtime.embedded import EmbeddedRedis, free_port

    server = EmbeddedRedis(home / "redis", free_port(), persist=False)
    server.start()
    try:
        yield embedded_redis_url(server.port)
    finally:
        server.stop()


def measure(code: Path, url: str, redis_url: str, args: argparse.Namespace) -> dict[str, float]:
    env = code_env(dict(os.environ), code)
    argv = [sys.executable, __file__, "--consume", url, redis_url]
    argv += [str(args.seconds), str(args.warmup)]
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True, cwd=code)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=2500)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--watched", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", metavar="REF", help="also measure this git revision")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, embedded_redis(Path(tmp)) as redis_url:
        port_file = Path(tmp) / "sim.port"
        sim = subprocess.Popen(
            [sys.executable, __file__, "--serve-sim", str(args.symbols), str(args.interval)]
            + [str(port_file)],
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text()):
                if time.monotonic() > deadline:
                    raise SystemExit("the paper exchange did not start")
                time.sleep(0.1)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            publish_bands(redis_url, args.watched)
            variants = [("working tree", ROOT)]
            if args.compare:
                variants.insert(0, (args.compare, export_revision(args.compare, Path(tmp) / "ref")))
            offered = args.symbols / args.interval
            print(
                f"offered {offered:,.0f} ticks/s ({args.symbols} symbols every {args.interval} s),"
                f" {args.watched} watched, {args.seconds:.0f} s per run"
            )
            results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
            for round_no in range(1, args.rounds + 1):
                for name, code in variants:
                    r = measure(code, url, redis_url, args)
                    results[name].append(r)
                    print(
                        f"round {round_no} {name:>14}: {r['ticks'] / r['elapsed']:9,.0f} ticks/s "
                        f"received, CPU {r['cpu'] / r['elapsed']:5.1%}, "
                        f"{r['ticks'] / max(r['cpu'], 1e-9):9,.0f} ticks per CPU-second"
                    )
            for name, runs in results.items():
                ticks = sum(r["ticks"] for r in runs)
                cpu = sum(r["cpu"] for r in runs)
                print(f"{name:>20}: {ticks / cpu:9,.0f} ticks per CPU-second (all rounds)")
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(15)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-sim":
        serve_sim(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
