"""Critical events become alerts that reach the webhook and Telegram: once, retried, deduped,
rate-limited, and without leaking a secret."""

import asyncio
import logging
import threading
from datetime import UTC, datetime

import pytest
from aiohttp import web
from sqlalchemy import select

from core.clock import ManualClock
from core.config import load_settings
from core.db.models import Alert, Event
from core.db.session import unit_of_work
from core.events import EventType, Severity, record
from core.services.alerts import deliver_pending
from shell.runtime.embedded import free_port

pytestmark = pytest.mark.integration

BOT_TOKEN = "123456:AAH-very-secret-bot-token"
HOOK_SECRET = "hook-path-s3cret-987"


class Receiver:
    """A local HTTP endpoint: records each POST and answers with the next scripted status."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.statuses: list[int] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.json()))
        status = self.statuses.pop(0) if self.statuses else 200
        if request.path.endswith("/sendMessage"):
            return web.json_response({"ok": status == 200}, status=status)
        return web.json_response({}, status=status)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> "Receiver":
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def paths(self) -> list[str]:
        return [path for path, _ in self.received]


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def clock():
    return ManualClock(datetime.now(UTC))


def webhook_settings(receiver, **overrides):
    return load_settings(alert_webhook_url=f"{receiver.url}/hook/{HOOK_SECRET}", **overrides)


def critical(event_type=EventType.POSITION_UNPROTECTED_ALERT, symbol="BTCUSDT", **data):
    with unit_of_work() as s:
        record(
            s,
            event_type,
            severity=Severity.CRITICAL,
            exchange="binance",
            symbol=symbol,
            position_id=data.pop("position_id", 5),
            correlation_id="corr-5",
            **data,
        )


def alerts():
    with unit_of_work() as s:
        return list(s.scalars(select(Alert).order_by(Alert.id)))


def event_types():
    with unit_of_work() as s:
        return [e.type for e in s.scalars(select(Event).order_by(Event.id))]


def test_a_position_losing_its_stop_reaches_the_webhook(clean_db, receiver, clock):
    critical(unprotected_seconds=75, quantity="0.003")
    report = deliver_pending(webhook_settings(receiver), clock)
    assert report.sent == 1
    [(path, body)] = receiver.received
    assert path == f"/hook/{HOOK_SECRET}"
    assert body["kind"] == "position_unprotected_alert" and body["severity"] == "critical"
    assert (body["symbol"], body["position_id"], body["correlation_id"]) == ("BTCUSDT", 5, "corr-5")
    assert body["data"]["unprotected_seconds"] == 75
    assert "BTCUSDT" in body["text"]
    [alert] = alerts()
    assert alert.status == "sent" and alert.attempts == 1 and alert.delivered == ["webhook"]
    assert "alert_sent" in event_types()


def test_an_alert_exists_only_if_its_event_committed(clean_db):
    with pytest.raises(RuntimeError), unit_of_work() as s:
        record(s, EventType.ROLLBACK_FAILED, severity=Severity.CRITICAL, symbol="ETHUSDT")
        raise RuntimeError("the change failed")
    assert alerts() == []


def test_only_alerting_types_and_critical_events_create_alerts(clean_db):
    with unit_of_work() as s:
        record(s, EventType.POSITION_CREATED, symbol="BTCUSDT")
        record(s, EventType.STOP_LOSS_FAILED, severity=Severity.ERROR, symbol="BTCUSDT")
        record(s, EventType.CLOSE_FAILED, severity=Severity.CRITICAL, symbol="BTCUSDT")
        record(s, EventType.ZOMBIE_ALERT, severity=Severity.WARNING, symbol="BTCUSDT")
    assert [a.kind for a in alerts()] == ["close_failed", "zombie_alert_triggered"]


def test_a_failed_delivery_backs_off_and_is_retried_until_it_succeeds(clean_db, receiver, clock):
    settings = webhook_settings(receiver, alert_retry_base_seconds=30)
    receiver.statuses = [500]
    critical()
    first = deliver_pending(settings, clock)
    assert first.retrying == 1 and first.sent == 0
    [alert] = alerts()
    assert alert.status == "pending" and alert.attempts == 1
    assert alert.last_error == "webhook: HTTP 500 Internal Server Error"
    assert alert.next_attempt_at > clock.now()
    assert deliver_pending(settings, clock).sent == 0  # not due yet: nothing sent
    assert len(receiver.received) == 1
    clock.advance(seconds=31)
    assert deliver_pending(settings, clock).sent == 1
    [alert] = alerts()
    assert alert.status == "sent" and alert.attempts == 2
    assert len(receiver.received) == 2
    assert "alert_delivery_failed" in event_types()


def test_a_channel_that_has_the_alert_is_not_called_again_on_retry(clean_db, receiver, clock):
    settings = webhook_settings(
        receiver,
        alert_telegram_bot_token=BOT_TOKEN,
        alert_telegram_chat_id="42",
        alert_telegram_api_url=receiver.url,
        alert_retry_base_seconds=1,
    )
    receiver.statuses = [200, 500]  # webhook ok, Telegram down
    critical()
    deliver_pending(settings, clock)
    clock.advance(seconds=2)
    deliver_pending(settings, clock)
    webhook_calls = [p for p in receiver.paths() if p.startswith("/hook/")]
    telegram_calls = [p for p in receiver.paths() if p.endswith("/sendMessage")]
    assert len(webhook_calls) == 1 and len(telegram_calls) == 2
    [alert] = alerts()
    assert alert.status == "sent" and sorted(alert.delivered) == ["telegram", "webhook"]
    telegram_body = [b for p, b in receiver.received if p.endswith("/sendMessage")][-1]
    assert (
        telegram_body["chat_id"] == "42" and "position_unprotected_alert" in telegram_body["text"]
    )


def test_delivery_errors_and_logs_never_contain_the_bot_token_or_hook_url(
    clean_db, receiver, clock, caplog
):
    closed = free_port()
    settings = load_settings(
        alert_webhook_url=f"http://127.0.0.1:{closed}/hook/{HOOK_SECRET}",
        alert_telegram_bot_token=BOT_TOKEN,
        alert_telegram_chat_id="42",
        alert_telegram_api_url=f"http://127.0.0.1:{closed}",
    )
    critical()
    with caplog.at_level(logging.DEBUG):
        assert deliver_pending(settings, clock).retrying == 1
    [alert] = alerts()
    assert "webhook:" in alert.last_error and "telegram:" in alert.last_error
    with unit_of_work() as s:
        stored = [str(e.data) for e in s.scalars(select(Event))]
    for text in [alert.last_error, caplog.text, *stored]:
        assert HOOK_SECRET not in text and "AAH-very-secret" not in text


def test_same_kind_and_symbol_alert_once_within_the_window_and_count_the_rest(
    clean_db, receiver, clock
):
    for _ in range(3):
        critical(symbol="BTCUSDT")
    critical(symbol="ETHUSDT")
    report = deliver_pending(webhook_settings(receiver, alert_dedup_seconds=300), clock)
    assert (report.sent, report.suppressed) == (2, 2)
    assert sorted(b["symbol"] for _, b in receiver.received) == ["BTCUSDT", "ETHUSDT"]
    first, second, third, other = alerts()
    assert first.status == "sent" and first.suppressed_count == 2
    assert second.status == third.status == "suppressed"
    assert other.status == "sent" and other.suppressed_count == 0


def test_the_next_alert_after_the_window_says_how_many_were_folded(clean_db, receiver, clock):
    settings = webhook_settings(receiver, alert_dedup_seconds=300)
    critical()
    critical()
    deliver_pending(settings, clock)
    with unit_of_work() as s:  # the window has passed for the next one
        s.execute(Alert.__table__.update().values(created_at=datetime(2020, 1, 1, tzinfo=UTC)))
    critical()
    deliver_pending(settings, clock)
    assert [b["suppressed_since_previous"] for _, b in receiver.received] == [0, 1]


def test_the_rate_limit_defers_the_excess_without_dropping_it(clean_db, receiver, clock):
    settings = webhook_settings(receiver, alert_rate_limit=2, alert_rate_window_seconds=60)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        critical(symbol=symbol)
    report = deliver_pending(settings, clock)
    assert (report.sent, report.deferred) == (2, 1)
    assert deliver_pending(settings, clock).sent == 0
    clock.advance(seconds=61)
    assert deliver_pending(settings, clock).sent == 1
    assert [a.status for a in alerts()] == ["sent", "sent", "sent"]
    assert len(receiver.received) == 3


def test_delivery_gives_up_after_the_last_attempt(clean_db, receiver, clock):
    settings = webhook_settings(receiver, alert_max_attempts=2, alert_retry_base_seconds=1)
    receiver.statuses = [500, 503]
    critical()
    deliver_pending(settings, clock)
    clock.advance(seconds=5)
    report = deliver_pending(settings, clock)
    assert report.gave_up == 1
    [alert] = alerts()
    assert alert.status == "failed" and alert.attempts == 2 and "HTTP 503" in alert.last_error
    assert "alert_gave_up" in event_types()


def test_without_a_channel_alerts_wait_in_the_table(clean_db, clock):
    critical()
    report = deliver_pending(load_settings(), clock)
    assert report.waiting_for_channel == 1
    [alert] = alerts()
    assert alert.status == "pending" and alert.attempts == 0
