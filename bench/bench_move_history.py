"""Benchmark: what one trailing stop move costs as its position's history grows.

A position that trails for days moves hundreds of times, and each move leaves a row in the
order ledger. This measures the CPU of the thread that runs the price path
(``time.thread_time``: the in-process paper exchange's threads do not count) for each move of
one position, moved again and again by the real price path (``price_path.on_price``) on
embedded PostgreSQL and Redis and the paper exchange, and prints the median per stretch of
moves. A cost that grows with the stretch number is a cost that grows with a position's age.

    python bench/bench_move_history.py [--moves 600] [--every 100] [--compare REF]

``--compare REF`` measures REF's code the same way, in the same run, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, code_env, export_revision, machine  # noqa: E402

SYMBOL = "BTCUSDT"
STEP = Decimal("0.002")  # each move's new high, relative: enough to move the stop every time


def measure(moves: int, every: int) -> list[dict[str, float]]:
    """In this process: one position moved ``moves`` times; the median CPU per stretch."""
    from common import bench_env
    from sqlalchemy import func, select

    from core.db.models import Event
    from core.db.session import unit_of_work
    from core.redis_scripts import run_script
    from core.services import price_path
    from core.services.opening import OpenOutcome, open_position
    from core.services.positions import NewPosition, create_position
    from core.services.tick_window import TICK_SCRIPT, pending_key, window_key
    from sim.state import SimOptions

    with bench_env(SimOptions()) as env:
        deps = env.deps(trailing_min_update_interval=0, trailing_activation_percent=0.1)
        price = Decimal(60000)
        env.sim.set_price(SYMBOL, str(price))
        with unit_of_work() as s:
            pid = create_position(s, NewPosition("binance", SYMBOL, "long")).id
        assert open_position(deps, pid) is OpenOutcome.ACTIVE
        price_path.on_price(deps, "binance", SYMBOL)  # the band and the venue's rules
        keys = (window_key("binance", SYMBOL), pending_key("binance", SYMBOL))
        costs: list[float] = []
        for _ in range(moves):
            price = (price * (1 + STEP)).quantize(Decimal("0.1"))
            env.sim.set_price(SYMBOL, str(price))
            now_ms = int(time.time() * 1000)
            run_script(deps.redis, TICK_SCRIPT, 2, *keys, str(price), now_ms, 30_000)
            started = time.thread_time()
            price_path.on_price(deps, "binance", SYMBOL)
            costs.append((time.thread_time() - started) * 1000)
        with unit_of_work() as s:
            moved = s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.position_id == pid, Event.type == "trailing_stop_updated")
            )
    if moved != moves:  # every run must have been a move, or the stretches measure other work
        raise SystemExit(f"{moved} of {moves} runs moved the stop")
    return [
        {"from": i, "to": i + every, "p50_ms": statistics.median(costs[i : i + every])}
        for i in range(0, len(costs) - every + 1, every)
    ]


def run_tree(name: str, code: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    """``measure`` in a subprocess running ``code`` (the working tree or an exported REF)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
    argv += ["--moves", str(args.moves), "--every", str(args.every)]
    env = code_env(dict(os.environ, BENCH_QUIET="1"), code)
    done = subprocess.run(argv, env=env, cwd=code, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"[{name}] failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=600)
    parser.add_argument("--every", type=int, default=100, help="moves per reported stretch")
    parser.add_argument("--compare", metavar="REF", help="also measure the code of REF")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moves < args.every or args.every < 1:
        parser.error("--moves must be at least --every, and --every at least 1")
    if args.child:
        print(json.dumps(measure(args.moves, args.every)))
        return
    print(machine())
    trees = [("working tree", ROOT)]
    with tempfile.TemporaryDirectory(prefix="vigil-bench-ref-") as tmp:
        if args.compare:
            trees.insert(0, (args.compare, export_revision(args.compare, Path(tmp))))
        for name, code in trees:
            print(f"[{name}] {args.moves} moves of one position ...", flush=True)
            for stretch in run_tree(name, code, args):
                print(
                    f"[{name}] moves {stretch['from']:>4.0f}-{stretch['to']:<4.0f}"
                    f" CPU per move p50 {stretch['p50_ms']:6.2f} ms"
                )


if __name__ == "__main__":
    main()
