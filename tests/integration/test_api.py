"""`vigil api`: health per component (200/503), Prometheus metrics, read-only queries, and
task triggers behind a bearer token."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from core import metrics
from core.api.app import create_app
from core.api.task_args import check_task_arguments
from core.clock import SYSTEM_CLOCK
from core.db.models import Event
from core.db.session import unit_of_work
from core.events import EventType, record
from core.services import heartbeat
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from shell.runtime.embedded import free_port

pytestmark = pytest.mark.integration

TOKEN = "api-token-for-tests-123"


class Served:
    """An aiohttp app served on a real port from a background loop; sync requests."""

    def __init__(self, app: web.Application) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", self.port)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def request(self, method, path, headers=None, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers["Content-Type"]
        return status, (json.loads(raw) if "json" in ctype else raw.decode())

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def api(sim, make_deps, redis_client):
    """Start the API with the given settings overrides and wiring; stopped after the test."""
    started = []
    metrics.configure_metrics(redis_client)

    def start(workers=("worker1@host",), sent=None, **overrides):
        deps = make_deps(health_cache_seconds=0, **overrides)
        app = create_app(
            deps.settings,
            deps_factory=lambda: deps,
            redis_client=redis_client,
            worker_ping=lambda timeout: list(workers),
            task_sender=(lambda name, kwargs: sent.append((name, kwargs)) or "id-1")
            if sent is not None
            else None,
            task_names=lambda: ["vigil.maintenance.ping", "vigil.maintenance.reconciliation"],
            task_checker=real_task_checker,
        )
        served = Served(app)
        started.append(served)
        return served, deps

    yield start
    for served in started:
        served.stop()
    metrics.configure_metrics(None)


def real_task_checker(name, kwargs):
    """The check `vigil api` wires in, against the registered task's own signature."""
    from tasks.app import app as celery

    celery.loader.import_default_modules()
    return check_task_arguments(celery.tasks[name].run, kwargs, name)


def beat_seen(ago=timedelta(0)):
    with unit_of_work() as s:
        heartbeat.beat(s, "beat", SYSTEM_CLOCK.now() - ago)


def opened(deps, symbol="BTCUSDT"):
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def statuses(body):
    return {name: c["status"] for name, c in body["components"].items()}


def test_health_is_200_when_every_part_is_alive(api):
    beat_seen()
    served, _ = api()
    status, body = served.request("GET", "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert statuses(body) == {
        "database": "ok",
        "redis": "ok",
        "exchange": "ok",
        "beat": "ok",
        "ingest": "not_configured",
        "price_feed": "not_configured",
        "processes": "not_configured",
        "workers": "ok",
        "queues": "ok",
        "unprotected_positions": "ok",
        "interrupted_openings": "ok",
    }
    assert body["components"]["workers"]["count"] == 1


def test_health_is_503_when_beat_is_stale_and_no_worker_answers(api):
    beat_seen(ago=timedelta(minutes=10))
    served, _ = api(workers=())
    status, body = served.request("GET", "/health")
    assert status == 503 and body["status"] == "fail"
    assert statuses(body)["beat"] == "fail" and statuses(body)["workers"] == "fail"
    assert body["components"]["beat"]["age_seconds"] >= 600
    served.request("GET", "/health")  # the same failure again: no second event
    with unit_of_work() as s:
        events = s.scalars(select(Event).where(Event.type == "health_check_failed")).all()
    [event] = events
    assert event.data["failing"] == ["beat", "workers"]
    assert event.data["components"]["beat"]["status"] == "fail"


def test_health_counts_a_position_that_lost_its_stop(api, sim):
    beat_seen()
    served, deps = api()
    pid = opened(deps)
    assert served.request("GET", "/health")[0] == 200
    [stop] = sim.state()["open_algo_orders"]
    deps.exchange.cancel_order("BTCUSDT", str(stop["algoId"]), conditional=True)
    status, body = served.request("GET", "/health")
    assert status == 503
    component = body["components"]["unprotected_positions"]
    assert component["status"] == "fail" and component["count"] == 1
    assert component["positions"][0]["position_id"] == pid


def test_health_reports_the_oldest_interrupted_opening(api):
    beat_seen()
    served, _ = api(health_interrupted_max_seconds=300)
    with unit_of_work() as s:
        p = create_position(s, NewPosition("binance", "ETHUSDT", "long"))
        s.flush()
        s.execute(
            text("UPDATE positions SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": p.id},
        )
    status, body = served.request("GET", "/health")
    assert status == 503
    component = body["components"]["interrupted_openings"]
    assert component["count"] == 1 and component["oldest_age_seconds"] >= 3500


def test_health_fails_the_exchange_when_it_cannot_be_read(api, sim):
    beat_seen()
    served, _ = api()
    sim.fault("openOrders", "http_error", count=10)
    status, body = served.request("GET", "/health")
    assert status == 503 and statuses(body)["exchange"] == "fail"
    assert statuses(body)["database"] == "ok"


def samples(text_body):
    out = {}
    for family in text_string_to_metric_families(text_body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_expose_workers_instruments_and_database_state(api, sim):
    served, deps = api()
    pid = opened(deps)  # takes a symbol lock: one lock wait observed
    metrics.observe_task("vigil.maintenance.ping", "success", 0.02)
    metrics.observe_task("vigil.maintenance.ping", "failure", 0.3)
    metrics.observe_tick_to_order(0.004)
    metrics.observe_tick_to_order(0.2)
    sim.fault("positionRisk", "http_error", count=1)
    with pytest.raises(Exception):  # noqa: B017 - the adapter raises its own class
        deps.exchange.positions()
    status, body = served.request("GET", "/metrics")
    assert status == 200
    got = samples(body)
    assert (
        got[("vigil_tasks_total", (("outcome", "success"), ("task", "vigil.maintenance.ping")))]
        == 1
    )
    assert got[("vigil_task_duration_seconds_count", (("task", "vigil.maintenance.ping"),))] == 2
    assert got[("vigil_tick_to_order_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("vigil_tick_to_order_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("vigil_tick_to_order_seconds_sum", ())] == pytest.approx(0.204)
    assert got[("vigil_lock_wait_seconds_count", (("outcome", "acquired"),))] >= 1
    assert got[("vigil_exchange_errors_total", (("kind", "VenueUnavailable"),))] >= 1
    assert got[("vigil_positions", (("exchange", "binance"), ("status", "active")))] == 1
    assert got[("vigil_unprotected_positions", ())] == 0
    created = ("vigil_events_total", (("severity", "info"), ("type", "position_created")))
    assert got[created] == 1
    record_more_events(pid)
    assert samples(served.request("GET", "/metrics")[1])[created] == 2


def record_more_events(pid):
    with unit_of_work() as s:
        record(s, EventType.POSITION_CREATED, symbol="ETHUSDT", position_id=pid + 100)


def test_events_filter_by_symbol_type_since_and_show_a_timeline(api):
    served, deps = api()
    pid = opened(deps, "BTCUSDT")
    opened(deps, "ETHUSDT")
    status, body = served.request("GET", "/events?symbol=BTCUSDT&limit=500")
    assert status == 200 and {e["symbol"] for e in body["events"]} == {"BTCUSDT"}
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    _, typed = served.request("GET", "/events?type=stop_loss_placed,position_created")
    assert {e["type"] for e in typed["events"]} == {"stop_loss_placed", "position_created"}
    assert len(typed["events"]) == 4
    _, later = served.request("GET", "/events?since=2999-01-01T00:00:00Z")
    assert later["events"] == []
    correlation = body["events"][0]["correlation_id"]
    _, timeline = served.request("GET", f"/events?correlation_id={correlation}")
    types = [e["type"] for e in timeline["events"]]
    assert types[0] == "position_created" and "stop_loss_placed" in types
    assert all(e["position_id"] in (pid, None) for e in timeline["events"])
    assert served.request("GET", "/events?since=yesterday")[0] == 400


def test_positions_filter_by_status_and_symbol(api):
    served, deps = api()
    opened(deps, "BTCUSDT")
    with unit_of_work() as s:
        create_position(s, NewPosition("binance", "ETHUSDT", "long"))
    _, active = served.request("GET", "/positions?status=active")
    assert [p["symbol"] for p in active["positions"]] == ["BTCUSDT"]
    assert active["positions"][0]["stop_price"] is not None
    _, eth = served.request("GET", "/positions?symbol=ethusdt")
    assert [p["status"] for p in eth["positions"]] == ["pending_entry"]


def test_triggering_a_task_is_disabled_without_a_configured_token(api):
    sent = []
    served, _ = api(sent=sent)
    status, body = served.request("POST", "/tasks/ping", headers={"Authorization": "Bearer x"})
    assert status == 403 and "VIGIL_API_TOKEN" in body["error"]
    assert sent == []


def test_triggering_a_task_needs_the_right_bearer_token(api):
    sent = []
    served, _ = api(sent=sent, api_token=TOKEN)
    assert served.request("POST", "/tasks/ping")[0] == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert served.request("POST", "/tasks/ping", headers=wrong)[0] == 401
    right = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, body = served.request("POST", "/tasks/reconciliation", headers=right, body={})
    assert status == 202 and body == {"task": "vigil.maintenance.reconciliation", "id": "id-1"}
    assert sent == [("vigil.maintenance.reconciliation", {})]
    assert served.request("POST", "/tasks/nope", headers=right)[0] == 404


def test_vigil_api_serves_health_and_metrics_as_a_process(sim, clean_db, redis_url, tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        VIGIL_HOME=str(tmp_path),
        VIGIL_EXCHANGE_URL=sim.url,
        VIGIL_API_PORT=str(port),
        VIGIL_LOG_JSON="true",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
                raise AssertionError("no beat and no worker, yet healthy")
            except urllib.error.HTTPError as exc:
                code, body = exc.code, json.loads(exc.read())
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert code == 503
        assert body["components"]["workers"]["status"] == "fail"  # the broker was asked
        assert body["components"]["exchange"]["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert b"vigil_positions" in resp.read()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0  # stops cleanly on SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
