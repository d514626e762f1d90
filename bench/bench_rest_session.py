"""Client CPU of a stop move's two REST calls (POST the new stop, DELETE the old), by HTTP
session: the ``requests.Session`` ccxt builds itself, and ``core.exchange.http.LeanSession``
that ``core.exchange.factory.build_exchange`` installs.

Both clients talk to the same paper exchange (in this process, on its own thread) through the
engine's ``ExchangeAdapter``; rounds alternate between them so load on the machine falls on
both alike. CPU is the calling thread's (``time.thread_time``), so the simulator's own work is
not counted; wall time is shown beside it.

Prints, per session and dialect: CPU per POST+DELETE pair (median, mean, p90) and wall p50.

Run: python bench/bench_rest_session.py [--pairs 400] [--dialects binance,bybit]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pct  # noqa: E402

from core.exchange.adapter import ExchangeAdapter  # noqa: E402
from core.exchange.factory import build_exchange  # noqa: E402
from core.exchange.http import LeanSession  # noqa: E402
from sim.runner import SimServer  # noqa: E402
from sim.state import SimOptions  # noqa: E402

SYMBOL = "BTCUSDT"


def _adapter(sim: SimServer, dialect: str, lean: bool) -> ExchangeAdapter:
    client = build_exchange(
        "paper", url=sim.url, api_key="paper", api_secret="paper", paper_dialect=dialect
    )
    assert isinstance(client.session, LeanSession)
    if not lean:  # what ccxt builds when left alone (as before the lean session)
        client.session = requests.Session()
        client.session.trust_env = client.requests_trust_env
    client.load_markets()
    return ExchangeAdapter(client, dialect)


def _pair(adapter: ExchangeAdapter, trigger: Decimal, cid: str) -> tuple[float, float]:
    """One stop placed and cancelled: (thread CPU s, wall s)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    stop = adapter.create_stop(SYMBOL, "sell", Decimal("0.01"), trigger, cid)
    adapter.cancel_order(SYMBOL, stop.id, conditional=True)
    return time.thread_time() - cpu, time.perf_counter() - wall


def run(dialect: str, pairs: int, warmup: int = 30) -> dict[str, tuple[list[float], list[float]]]:
    sim = SimServer(SimOptions(seed=7, scenario="frozen", tick_interval=1.0, dialect=dialect))
    sim.start()
    sim.admin("POST", "/_sim/config", {"order_rate_limit": 1_000_000, "weight_limit": None})
    try:
        adapters = {"requests": _adapter(sim, dialect, False), "lean": _adapter(sim, dialect, True)}
        any_adapter = adapters["lean"]
        any_adapter.create_market_order(SYMBOL, "buy", Decimal("0.02"), "v1-b-e0")
        time.sleep(0.5)  # Bybit's simulator shows a position 150 ms after its fill
        trigger = (any_adapter.mark_price(SYMBOL) * Decimal("0.9")).quantize(Decimal("0.1"))
        samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in adapters}
        for i in range(warmup + pairs):
            for name, adapter in adapters.items():
                cpu, wall = _pair(adapter, trigger, f"v1-b-{name[0]}{i}")
                if i >= warmup:
                    samples[name][0].append(cpu)
                    samples[name][1].append(wall)
        return samples
    finally:
        sim.stop()


def report(dialect: str, samples: dict[str, tuple[list[float], list[float]]]) -> None:
    medians = {}
    for name, (cpu, wall) in samples.items():
        medians[name] = statistics.median(cpu)
        print(
            f"  {dialect:8s} {name:9s} CPU per POST+DELETE pair:"
            f" median {medians[name] * 1e3:.2f} ms,"
            f" mean {statistics.fmean(cpu) * 1e3:.2f} ms, p90 {pct(cpu, 0.9) * 1e3:.2f} ms;"
            f" wall p50 {pct(wall, 0.5) * 1e3:.2f} ms  (n={len(cpu)})"
        )
    saved = medians["requests"] - medians["lean"]
    print(
        f"  {dialect:8s} lean/requests {medians['lean'] / medians['requests']:.2f}"
        f" (saves {saved * 1e3:.2f} ms of CPU per stop move)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--dialects", default="binance,bybit")
    args = parser.parse_args()
    print(machine())
    for dialect in args.dialects.split(","):
        report(dialect, run(dialect, args.pairs))


if __name__ == "__main__":
    main()
