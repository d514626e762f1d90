"""Real processes: a worker, beat, the API and an ingest on the real broker and database,
with a position open on the paper exchange. Killing the ingest (the mark-price stream)
pages ``price_feed``; killing beat pages (noticed by the API) and stops the dead-man's
pings; killing every worker pages.

``page_times`` is also what ``python -m bench.bench_paging`` runs with the default
settings to measure the times to page; here it runs with short staleness thresholds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shell.runtime.embedded import free_port
from tests.fixtures.processes import start_vigil, stop_process
from tests.integration.test_paging import Inbox

pytestmark = pytest.mark.integration

FAST = {
    "VIGIL_HEARTBEAT_INTERVAL": "1",
    "VIGIL_HEALTH_BEAT_STALE_SECONDS": "5",
    "VIGIL_WATCHDOG_INTERVAL": "1",
    "VIGIL_PAGE_CONFIRM_SECONDS": "2",
    "VIGIL_DEADMAN_INTERVAL": "1",
    "VIGIL_PRICE_FEED_STALE_SECONDS": "3",
}


def _spawn(args: list[str], env: dict[str, str], log_dir: str) -> subprocess.Popen:
    return start_vigil(args, env, Path(log_dir) / f"{args[0]}.log")


def _kill(proc: subprocess.Popen) -> None:
    stop_process(proc, signal.SIGKILL)


def _wait(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return value


def _page(inbox: Inbox, component: str) -> dict | None:
    for body in inbox.posts():
        if body.get("kind") == "component_down" and body["data"].get("component") == component:
            return body
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:  # refused while starting, or 503 (HTTPError)
        return False


def _price_feed_watched(url: str) -> bool:
    """Every part healthy (else 503), and price_feed judges a live stream with a position
    open: without one it is ok whatever the stream does, and its page would never come."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback
            feed = json.load(response)["components"]["price_feed"]
    except OSError:  # refused while starting, or 503 (HTTPError)
        return False
    return bool(feed["status"] == "ok" and feed.get("open_positions", 0) >= 1)


def _open_a_position_and_have_it_adopted(env: dict[str, str], log_dir: str) -> None:
    """A position opened on the paper exchange by hand, adopted by a reconciliation sent now
    (not left to beat's cadence), so price_feed has an open position to watch over."""
    request = urllib.request.Request(  # noqa: S310 - the local paper exchange
        f"{env['VIGIL_EXCHANGE_URL']}/_sim/open_position",
        data=json.dumps({"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
    sent = _spawn(["task", "reconciliation", "--wait"], env, log_dir)
    assert sent.wait(180) == 0, "the reconciliation sent by hand failed"


def _pings(inbox: Inbox) -> list[str]:
    return [path for method, path, _ in inbox.received if method == "GET"]


def page_times(env: dict[str, str], inbox: Inbox, timeout: float = 300.0) -> dict[str, Any]:
    """Start a worker, beat, the API and an ingest, with a position open; kill the ingest,
    then beat, then every worker; time each page from its SIGKILL to the webhook."""
    env = dict(
        env,
        VIGIL_ALERT_WEBHOOK_URL=f"{inbox.url}/hook",
        VIGIL_DEADMAN_URL=f"{inbox.url}/ping",
        VIGIL_API_PORT=str(free_port()),
    )
    env.pop("VIGIL_SIGNAL_URL", None)
    log_dir = env["VIGIL_HOME"]
    procs = {
        "worker": _spawn(["worker", "--pool", "solo", "--name", "paging1"], env, log_dir),
        "beat": _spawn(["beat"], env, log_dir),
        "api": _spawn(["api"], env, log_dir),
        "ingest": _spawn(["ingest"], env, log_dir),
    }
    try:
        health = f"http://127.0.0.1:{env['VIGIL_API_PORT']}/health"
        _wait(lambda: _healthy(health), timeout, "every part healthy")
        _open_a_position_and_have_it_adopted(env, log_dir)
        _wait(lambda: _price_feed_watched(health), timeout, "price_feed ok with a position open")
        _wait(lambda: "/ping" in _pings(inbox), timeout, "a dead-man's ping while all is well")
        killed = time.monotonic()
        _kill(procs["ingest"])  # the price stream goes silent with the process
        feed_page = _wait(lambda: _page(inbox, "price_feed"), timeout, "price_feed's page")
        feed_seconds = time.monotonic() - killed
        killed = time.monotonic()
        _kill(procs["beat"])
        pings_at_kill = len(_pings(inbox))
        beat_page = _wait(lambda: _page(inbox, "beat"), timeout, "beat's page")
        beat_seconds = time.monotonic() - killed
        pings_after = len(_pings(inbox)) - pings_at_kill
        killed = time.monotonic()
        _kill(procs["worker"])
        workers_page = _wait(lambda: _page(inbox, "workers"), timeout, "the workers' page")
        return {
            "price_feed_page_seconds": round(feed_seconds, 1),
            "price_feed_noticed_by": feed_page["data"]["noticed_by"],
            "beat_page_seconds": round(beat_seconds, 1),
            "beat_noticed_by": beat_page["data"]["noticed_by"],
            "pings_after_beat_killed": pings_after,
            "workers_page_seconds": round(time.monotonic() - killed, 1),
            "workers_noticed_by": workers_page["data"]["noticed_by"],
        }
    finally:
        for proc in procs.values():
            _kill(proc)


def test_killing_the_price_stream_then_beat_then_every_worker_pages_each(
    sim, clean_db, redis_url, tmp_path
):
    inbox = Inbox()
    try:
        env = dict(os.environ, VIGIL_HOME=str(tmp_path), VIGIL_EXCHANGE_URL=sim.url, **FAST)
        figures = page_times(env, inbox)
    finally:
        inbox.close()
    print(figures)
    assert figures["price_feed_noticed_by"] in {"api", "beat"}  # a silent stream pages
    assert figures["beat_noticed_by"] == "api"  # a dead beat cannot report itself
    assert figures["pings_after_beat_killed"] <= 1  # at most one already in flight
    assert figures["workers_noticed_by"] == "api"  # beat is dead by then


def test_beat_without_a_worker_calls_the_dead_mans_fail_url(sim, clean_db, redis_url, tmp_path):
    inbox = Inbox()
    env = dict(os.environ, VIGIL_HOME=str(tmp_path), VIGIL_EXCHANGE_URL=sim.url, **FAST)
    env.update(VIGIL_DEADMAN_URL=f"{inbox.url}/ping", VIGIL_ALERT_WEBHOOK_URL=f"{inbox.url}/hook")
    beat = _spawn(["beat"], env, str(tmp_path))
    try:
        _wait(lambda: "/ping/fail" in _pings(inbox), 120, "a /fail ping")
        # the beat process pages too: no worker answers (the API is not running here)
        page = _wait(lambda: _page(inbox, "workers"), 120, "the workers' page from beat")
        assert page["data"]["noticed_by"] == "beat"
    finally:
        _kill(beat)
        inbox.close()
