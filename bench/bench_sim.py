"""Benchmark of the paper exchange, through unmodified ccxt.

Prints:
  * order requests/s through ccxt sync (one client, sequential) and async (N concurrent
    coroutines on one client), MARKET orders that open and close a position;
  * mark-price fan-out: 500 symbols at 10 Hz (tick 100 ms) to one WebSocket subscriber
    on the combined stream: delivered messages/s and lag (receive time - event time
    `E`) p50/p99.

Run: python bench/bench_sim.py [--orders 2000] [--concurrency 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from core.exchange.factory import build_exchange
from sim.runner import SimServer
from sim.state import SimOptions

SYMBOL = "ETH/USDT:USDT"


def bench_sync(server: SimServer, orders: int) -> float:
    ex = build_exchange("paper", url=server.url, api_key="paper", api_secret="paper")
    ex.load_markets()
    start = time.perf_counter()
    for i in range(orders):
        ex.create_order(SYMBOL, "market", "buy" if i % 2 == 0 else "sell", 0.01)
    return orders / (time.perf_counter() - start)


async def _bench_async(server: SimServer, orders: int, concurrency: int) -> float:
    ex: Any = build_exchange(
        "paper", url=server.url, api_key="paper", api_secret="paper", async_mode=True
    )
    try:
        await ex.load_markets()
        per_worker = orders // concurrency

        async def worker(n: int) -> None:
            for i in range(per_worker):
                await ex.create_order(SYMBOL, "market", "buy" if (i + n) % 2 else "sell", 0.01)

        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return per_worker * concurrency / (time.perf_counter() - start)
    finally:
        await ex.close()


async def _fanout(server: SimServer, symbols: list[str], seconds: float) -> dict[str, float]:
    names = [f"{s.lower()}@markPrice@1s" for s in symbols]
    lags: list[float] = []
    count = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/stream", max_msg_size=0) as ws:
            for i in range(0, len(names), 200):  # a long URL would exceed header limits
                await ws.send_json({"method": "SUBSCRIBE", "params": names[i : i + 200], "id": i})
            await asyncio.wait_for(ws.receive(), 5)  # first frame: start the clock
            start = time.time()
            while time.time() - start < seconds:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                count += 1
                frame = json.loads(msg.data)
                if "data" not in frame:
                    continue  # a SUBSCRIBE reply
                event = frame["data"]
                lags.append(time.time() * 1000 - event["E"])
            elapsed = time.time() - start
    lags.sort()
    return {
        "messages_per_s": count / elapsed,
        "expected_per_s": len(symbols) * 10,
        "lag_p50_ms": statistics.median(lags),
        "lag_p99_ms": lags[int(len(lags) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    with SimServer(SimOptions(scenario="frozen", tick_interval=1.0)) as server:
        server.admin("POST", "/_sim/reset", {"balance": "100000000"})
        sync_rate = bench_sync(server, args.orders)
        print(f"orders sync  (1 client, sequential): {sync_rate:8.0f} req/s")
        async_rate = asyncio.run(_bench_async(server, args.orders, args.concurrency))
        print(f"orders async ({args.concurrency} concurrent):       {async_rate:8.0f} req/s")

    options = SimOptions(scenario="calm", tick_interval=0.1, synthetic_symbols=500)
    options.symbols = ["BTCUSDT"]  # the 500 synthetic symbols plus one
    with SimServer(options) as server:
        symbols = [f"SIM{i:03d}USDT" for i in range(500)]
        result = asyncio.run(_fanout(server, symbols, args.seconds))
        print(
            "mark-price fan-out 500 symbols @10 Hz, 1 subscriber: "
            f"{result['messages_per_s']:.0f} msg/s delivered "
            f"(expected {result['expected_per_s']:.0f}), "
            f"lag p50 {result['lag_p50_ms']:.1f} ms, p99 {result['lag_p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
