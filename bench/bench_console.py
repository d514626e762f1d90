"""The operator console with a full book: first load, and what live updates cost the API.

Set-up: a paper exchange listing ``--positions`` synthetic contracts; on each, a position
opened on the exchange with its stop (a closePosition STOP_MARKET carrying the engine's
client id), and the matching rows inserted directly into the database (position, trailing
row). ``vigil api`` then runs as its own process, as deployed.

Measured:
* first load: a real Chromium (Playwright, Debian's ``/usr/bin/chromium``) from navigation
  to the book on screen (``#open-count`` shows every position); the very first load after
  the API starts (cold: markets and marks not yet read) and the p50 of ``--loads`` more in
  fresh browser contexts; plus the book fragment alone over HTTP.
* live update cost: the CPU time (user + system) of the API process while one console tab
  polls (book every 2 s, system every 4 s) for ``--seconds``, as a percentage of one core,
  next to the same process idle for the same time.

With ``--token`` the API has ``VIGIL_API_TOKEN`` set and the page is opened with
``?token=``: the book then comes in a second request (the page cannot carry data for a
browser that has not shown the token yet).

Run: python bench/bench_console.py [--positions 500] [--seconds 60] [--loads 5] [--token]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
from chromium import CHROMIUM, CHROMIUM_ARGS
from common import BenchEnv, bench_env, machine, pct, wait_until
from sqlalchemy import text

from core.db.session import unit_of_work
from core.exchange.client_ids import client_order_id
from shell.runtime.embedded import free_port
from sim.state import SimOptions


def seed_book(env: BenchEnv, count: int) -> None:
    """``count`` active longs with live stops, on the exchange and in the database."""
    rows = []
    for i in range(count):
        symbol, corr = f"SIM{i:03d}USDT", f"bench{i:05d}"
        pid = i + 1
        env.sim.admin(
            "POST", "/_sim/open_position", {"symbol": symbol, "side": "long", "quantity": "10"}
        )
        env.sim.admin(
            "POST",
            "/_sim/order",
            {
                "symbol": symbol,
                "side": "SELL",
                "type": "STOP_MARKET",
                "stopPrice": "9.5",
                "closePosition": True,
                "clientOrderId": client_order_id(pid, corr, "stop"),
            },
        )
        rows.append({"id": pid, "symbol": symbol, "corr": corr})
    with unit_of_work() as s:
        s.execute(
            text(
                "INSERT INTO positions (id, exchange, symbol, side, status, quantity, "
                "entry_price, stop_price, correlation_id, opened_at) VALUES "
                "(:id, 'binance', :symbol, 'long', 'active', 10, 10, 9.5, :corr, now())"
            ),
            rows,
        )
        s.execute(
            text(
                "INSERT INTO trailing_stops (position_id, state, current_stop, activation_price, "
                "breakeven_done, update_count, owner) "
                "VALUES (:id, 'inactive', 9.5, 10.15, false, 0, 'trailing')"
            ),
            rows,
        )
        s.execute(text("SELECT setval('positions_id_seq', :n)"), {"n": count})


def start_api(env: BenchEnv, port: int, token: str | None) -> subprocess.Popen[bytes]:
    extra = {"VIGIL_API_PORT": str(port)} | ({"VIGIL_API_TOKEN": token} if token else {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "api", "--port", str(port)],
        env={**env.env, **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/console", timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            return False

    wait_until(answers, 60, "vigil api to answer", poll=0.2)
    return proc


def first_loads(page_url: str, count: int, loads: int) -> tuple[float, list[float]]:
    from playwright.sync_api import expect, sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(loads + 1):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(page_url)
            expect(page.locator("#open-count")).to_have_text(str(count), timeout=30_000)
            times.append(time.perf_counter() - started)
            context.close()
        browser.close()
    return times[0], times[1:]


def read_book(base: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{base}/console/fragments/book", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        return len(resp.read())


def fragment_times(base: str, token: str | None, repeats: int = 10) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        read_book(base, token)
        out.append(time.perf_counter() - started)
    return out


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return used / seconds * 100


def polling_cost(page_url: str, api: psutil.Process, seconds: float) -> float:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_url)
        page.wait_for_selector("#open-count")
        time.sleep(5)  # past the first, cold reads
        percent = cpu_percent(api, seconds)
        browser.close()
    return percent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--token", action="store_true", help="with VIGIL_API_TOKEN set")
    args = parser.parse_args()
    print(machine())
    options = SimOptions(
        seed=1, scenario="frozen", tick_interval=1.0, synthetic_symbols=args.positions
    )
    options.symbols = ["BTCUSDT"]
    with bench_env(options, VIGIL_HEALTH_CACHE_SECONDS="3") as env:
        seed_book(env, args.positions)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        token = "bench-console-token" if args.token else None
        page_url = f"{base}/console" + (f"?token={token}" if token else "")
        proc = start_api(env, port, token)
        try:
            api = psutil.Process(proc.pid)
            cold, warm = first_loads(page_url, args.positions, args.loads)
            print(
                f"first load, {args.positions} positions, Chromium: cold {cold * 1000:.0f} ms, "
                f"warm p50 {pct(warm, 0.5) * 1000:.0f} ms, max {max(warm) * 1000:.0f} ms "
                f"({len(warm)} loads{', with the token' if token else ''})"
            )
            frag, size = fragment_times(base, token), read_book(base, token)
            print(
                f"book fragment over HTTP: p50 {pct(frag, 0.5) * 1000:.0f} ms, "
                f"max {max(frag) * 1000:.0f} ms, {size / 1024:.0f} KiB"
            )
            idle = cpu_percent(api, args.seconds)
            polled = polling_cost(page_url, api, args.seconds)
            print(
                f"API CPU over {args.seconds:.0f} s: idle {idle:.1f} % of one core, "
                f"one console tab polling {polled:.1f} % (the console's share "
                f"{polled - idle:.1f} %)"
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
