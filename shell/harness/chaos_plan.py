"""What a chaos run breaks and when: the fault kinds, the symbols it trades, the seeded plan.

Why its own module: the fault vocabulary is read by the CLI (``vigil chaos --kinds``), the
tests and the injectors alike, and the plan is a pure function of the seed, so a run can be
repeated fault for fault.
"""

from __future__ import annotations

import random

from shell.harness.chaos_process import PROCESS_FAULT_KINDS

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


def shifted(schedule: list[tuple[float, str]], by: float) -> list[tuple[float, str]]:
    """The remaining faults, each ``by`` seconds later (order and spacing kept)."""
    return [(at + by, kind) for at, kind in schedule]
