"""The ingest against the signal source: every frame stored or rejected with its reason,
duplicates deduplicated, the socket kept up, reconnected with backoff, storage outages held."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from core.config import load_settings
from core.db.models import Event, Heartbeat, Signal, Wave
from core.db.session import unit_of_work
from core.endpoints import embedded_database_url
from core.ingest.context import PROCESS_WAVE_TASK, IngestContext
from core.ingest.process import BackgroundIngest
from core.ingest.signal_client import SignalClient

pytestmark = pytest.mark.integration


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


class Recorder:
    """The broker as the ingest sees it: records each task it is handed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def __call__(self, name: str, args: Any) -> None:
        self.sent.append((name, list(args)))


def ingest_context(source, **overrides: Any) -> IngestContext:
    settings = load_settings(
        **{
            "signal_url": source.ws_url,
            "signal_token": source.token,
            "signal_reconnect_min_seconds": 0.05,
            "signal_reconnect_max_seconds": 0.4,
            "signal_auth_retry_seconds": 0.4,
            "heartbeat_interval": 0.5,
            **overrides,
        }
    )
    return IngestContext(settings, "binance", Recorder())


@pytest.fixture
def source(signal_source, clean_db):
    """The signal source, silent until a test emits (its own waves are paused)."""
    signal_source.admin("POST", "/_sim/config", {"paused": True})
    return signal_source


@pytest.fixture
def ingest(source) -> Iterator[Callable[..., BackgroundIngest]]:
    started: list[BackgroundIngest] = []

    def start(**overrides: Any) -> BackgroundIngest:
        running = BackgroundIngest(ingest_context(source, **overrides), price_stream=False)
        started.append(running.start())
        wait_until(lambda: running.ctx.status.signal_connected, what="connected")
        return running

    yield start
    for running in started:
        assert running.stop() == 0


def events(event_type: str) -> list[Event]:
    with unit_of_work() as s:
        return list(s.scalars(select(Event).where(Event.type == event_type).order_by(Event.id)))


def signals() -> dict[str, Signal]:
    with unit_of_work() as s:
        return {row.signal_id: row for row in s.scalars(select(Signal).order_by(Signal.id))}


def test_signals_are_stored_once_and_a_resend_is_a_duplicate_event(source, ingest):
    running = ingest()
    source.emit(
        signals=[
            {"id": "s-a", "symbol": "BTCUSDT", "timestamp": stamp()},
            {"id": "s-b", "symbol": "ETHUSDT", "action": "SELL", "timestamp": stamp()},
        ]
    )
    source.emit(duplicate=True)  # s-b again, byte for byte
    source.emit(
        signals=[
            {"id": "s-a", "symbol": "BTCUSDT", "timestamp": stamp()},
            {"id": "s-c", "symbol": "SOLUSDT", "timestamp": stamp()},
        ],
        batch=True,
    )
    wait_until(lambda: running.ctx.status.frames == 4, what="4 frames")

    rows = signals()
    assert list(rows) == ["s-a", "s-b", "s-c"]
    assert {row.status for row in rows.values()} == {"received"}
    assert len({row.correlation_id for row in rows.values()}) == 3
    assert rows["s-b"].action == "SELL" and rows["s-b"].symbol == "ETHUSDT"
    [wave_id] = {row.wave_id for row in rows.values()}
    received = events("signal_received")
    assert {e.correlation_id for e in received} == {r.correlation_id for r in rows.values()}
    duplicates = events("signal_duplicate")
    assert sorted(e.data["signal_id"] for e in duplicates) == ["s-a", "s-b"]
    # the byte-for-byte resend is routine; s-a came back with other (random) scores
    differs = {e.data["signal_id"]: (e.data["content_differs"], e.severity) for e in duplicates}
    assert differs == {"s-b": (False, "info"), "s-a": (True, "warning")}
    by_id = {e.data["signal_id"]: e.correlation_id for e in duplicates}
    assert by_id == {"s-a": rows["s-a"].correlation_id, "s-b": rows["s-b"].correlation_id}
    [detected] = events("wave_detected")
    assert detected.data["wave_id"] == wave_id


def test_bad_frames_are_rejected_with_reasons_and_the_connection_stays_up(source, ingest):
    running = ingest()
    source.emit(raw="{broken")
    source.emit(raw="[1, 2]")
    source.emit(raw=json.dumps({"type": "signal", "id": "half"}))
    source.emit(signals=[{"id": "bad-action", "action": "HOLD"}])
    source.emit(signals=[{"id": "bad-exchange", "exchange": "kraken"}])
    source.emit(oversized=200_000)  # over VIGIL_SIGNAL_MAX_FRAME_BYTES (64 KiB)
    source.emit(signals=[{"id": "good-after", "timestamp": stamp()}])
    wait_until(lambda: "good-after" in signals(), what="the valid signal after the bad ones")

    reasons = [e.data["reason"] for e in events("signal_rejected")]
    assert sorted(reasons) == sorted(
        [
            "invalid_json",
            "not_an_object",
            "missing_field",
            "invalid_action",
            "invalid_exchange",
            "frame_too_large",
        ]
    )
    assert all(e.severity == "warning" for e in events("signal_rejected"))
    assert list(signals()) == ["good-after"]
    assert running.ctx.status.connects == 1
    assert events("websocket_disconnected") == []


class LoopThread:
    """One coroutine on its own event loop in a thread, stoppable from the test."""

    def __init__(self, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        self._run = run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._run(self._stop)

        asyncio.run(main())

    def __enter__(self) -> LoopThread:
        self.thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_a_refused_token_backs_off_pages_once_and_connects_once_fixed(source):
    ctx = ingest_context(source, signal_token="not-the-token")
    client = SignalClient(ctx)
    client.auth_backoff.draw = lambda low, high: high  # the bound itself, no jitter
    with LoopThread(client.run):
        wait_until(lambda: ctx.status.auth_refusals >= 5, what="5 refusals")
        # waits double from the first up to the auth ceiling: never a hot loop
        assert ctx.status.waits[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]
        [refused] = events("websocket_auth_refused")
        assert refused.severity == "critical" and refused.data["http_status"] == 401
        source.source.token = "not-the-token"  # the operator fixes the token on one side
        wait_until(lambda: ctx.status.signal_connected, what="connected with the fixed token")
    [reconnected] = events("websocket_reconnected")
    assert reconnected.data["auth_refusals"] >= 5
    assert len(events("websocket_auth_refused")) == 1  # one page per streak
    assert "not-the-token" not in json.dumps([e.data for e in events("websocket_reconnected")])


def drop_connections(source) -> None:
    async def close_all() -> None:
        for ws in list(source.source.clients):
            await ws.close()

    asyncio.run_coroutine_threadsafe(close_all(), source._loop).result(5)


def test_the_ingest_reconnects_after_the_source_drops_it(source, ingest):
    running = ingest()
    drop_connections(source)
    wait_until(lambda: running.ctx.status.connects == 2, what="a second connection")
    [lost] = events("websocket_disconnected")
    assert "closed by the server" in lost.data["reason"]
    [back] = events("websocket_reconnected")
    assert back.data["previous_reason"] == lost.data["reason"]
    wait_until(lambda: source.admin("GET", "/_sim/status")["clients"] == 1)
    source.emit(signals=[{"id": "after-reconnect", "timestamp": stamp()}])
    wait_until(lambda: "after-reconnect" in signals(), what="a signal after the reconnect")


@pytest.fixture
def database_blocked(postgres_server, database_url) -> Iterator[Callable[[bool], None]]:
    """Refuse and cut every connection to the test database, as a database outage does."""
    admin = create_engine(
        embedded_database_url(postgres_server.port, "postgres"), isolation_level="AUTOCOMMIT"
    )
    name = database_url.rsplit("/", 1)[1]

    def block(down: bool) -> None:
        with admin.connect() as conn:
            allow = "false" if down else "true"
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow}'))
            if down:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": name},
                )

    yield block
    block(False)
    admin.dispose()


def test_a_storage_outage_holds_the_frame_until_it_is_stored_in_order(
    source, ingest, database_blocked
):
    running = ingest()
    status = running.ctx.status
    database_blocked(True)
    source.emit(
        signals=[{"id": "held-1", "timestamp": stamp()}, {"id": "held-2", "timestamp": stamp()}]
    )
    wait_until(lambda: status.store_retries >= 3, what="storage retries")
    assert status.frames == 0  # the first frame is held, the second not even read
    database_blocked(False)
    wait_until(lambda: status.frames == 2, what="both frames stored")
    rows = signals()
    assert list(rows) == ["held-1", "held-2"] and rows["held-1"].id < rows["held-2"].id
    [lost] = events("database_connection_lost")
    assert lost.data["retries"] >= 3 and lost.data["held_signals"] == 1


def test_a_due_wave_is_enqueued_once_and_silent_windows_are_reported(source, ingest):
    running = ingest(wave_interval=2, wave_grace=0)
    source.emit(signals=[{"id": "due-1", "timestamp": stamp()}])
    wait_until(lambda: running.ctx.enqueue.sent, what="process_wave enqueued")
    wave_id = signals()["due-1"].wave_id
    assert running.ctx.enqueue.sent == [(PROCESS_WAVE_TASK, [wave_id])]
    with unit_of_work() as s:
        wave_start = s.get(Wave, wave_id).window_start
    assert events("wave_monitoring_started")
    empty = wait_until(
        lambda: [
            e for e in events("wave_not_found") if e.data["window_start"] != wave_start.isoformat()
        ],
        what="a window without signals reported",
    )
    assert empty[0].exchange == "binance"
    assert running.ctx.enqueue.sent == [(PROCESS_WAVE_TASK, [wave_id])]  # still once
    with unit_of_work() as s:
        beat = s.get(Heartbeat, "ingest:binance")
    assert beat is not None and beat.info["signal_connected"] is True
    assert beat.info["signals_stored"] == 1


def test_a_frame_beyond_the_sockets_hard_cap_is_rejected_and_the_ingest_reconnects(source, ingest):
    running = ingest()
    client_cap = 4 * 1024 * 1024  # HARD_CAP_MIN: frames this large cannot even be buffered
    source.emit(oversized=client_cap + 1024)
    wait_until(lambda: running.ctx.status.connects == 2, what="reconnected after the giant frame")
    [rejected] = events("signal_rejected")
    assert rejected.data["reason"] == "frame_too_large"
    assert "hard cap" in rejected.data["detail"]
    [lost] = events("websocket_disconnected")
    assert "hard cap" in lost.data["reason"]
    wait_until(lambda: source.admin("GET", "/_sim/status")["clients"] == 1)
    source.emit(signals=[{"id": "after-giant", "timestamp": stamp()}])
    wait_until(lambda: "after-giant" in signals(), what="a signal after the giant frame")
