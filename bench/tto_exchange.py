"""The tick-to-order benchmark's paper exchange: its own process, and what its request log
says about when each stop move's order was sent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from common import wait_until
from sqlalchemy import select

from core.db.models import Event
from core.db.session import unit_of_work

BENCH = Path(__file__).with_name("bench_tick_to_order.py")


class SimProcess:
    def __init__(self, symbols: int, interval: float, home: Path) -> None:
        port_file = home / f"sim-{symbols}-{interval}.port"
        port_file.unlink(missing_ok=True)  # an earlier run's (a --compare or a second round)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH),
                "--serve-sim",
                str(symbols),
                str(interval),
                str(port_file),
            ],
            start_new_session=True,
        )
        port = wait_until(lambda: port_file.exists() and port_file.read_text(), 60, "the sim", 0.1)
        self.url = f"http://127.0.0.1:{port}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - local URL
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def latencies(
    sim: SimProcess, log_from: int, algo_from: int, t0: float, t1: float
) -> list[tuple[float, float]]:
    """(seconds into the window, tick time -> the POST of that move's stop, in ms)."""
    posts = [
        r
        for r in sim.admin("GET", f"/_sim/requests?since={log_from}")["requests"]
        if r["method"] == "POST" and r["path"] == "/fapi/v1/algoOrder" and r["status"] == 200
    ]
    snapshot = sim.admin("GET", "/_sim/snapshot")
    algos = sorted(
        (a for a in snapshot["algo_orders"] if int(a["algoId"]) > algo_from),
        key=lambda a: int(a["algoId"]),
    )
    # the simulator handles requests one at a time: the n-th accepted POST made the n-th
    # algo order (ids are sequential)
    sent_at = {
        a["clientAlgoId"]: r["time"]
        for a, r in zip(algos, sorted(posts, key=lambda r: r["index"]), strict=False)
    }
    out = []
    with unit_of_work() as s:
        for event in s.scalars(select(Event).where(Event.type == "trailing_stop_updated")):
            tick_at = event.data.get("tick_at")
            if not tick_at or event.order_id not in sent_at:
                continue
            tick_ms = datetime.fromisoformat(tick_at).timestamp() * 1000
            if t0 * 1000 <= tick_ms <= t1 * 1000:
                out.append((tick_ms / 1000 - t0, sent_at[event.order_id] - tick_ms))
    return out


def max_algo_id(sim: SimProcess) -> int:
    return max(
        (int(a["algoId"]) for a in sim.admin("GET", "/_sim/snapshot")["algo_orders"]), default=0
    )
