"""Alert delivery: pending alert rows go to the webhook and Telegram, once each, with backoff.

Alert rows are created with their event (``core.events.record`` adds one for every event of
an ``ALERTING`` type or of critical severity: a transactional outbox). This module turns them
into messages, run by ``vigil.maintenance.deliver_alerts`` on a short beat cadence:

- **dedup**: an alert whose kind and symbol (its ``dedup_key``) already alerted within
  ``alert_dedup_seconds`` is not sent; it becomes ``suppressed`` and the alert that was (or
  will be) sent counts it in ``suppressed_count``, so a flapping condition pages once and the
  next page says how many were folded into the previous one;
- **rate limit**: at most ``alert_rate_limit`` alerts are sent per
  ``alert_rate_window_seconds``; the rest wait (they are deferred, never dropped);
- **per channel, at least once**: each channel that accepted an alert is remembered in
  ``delivered``, so a retry after a Telegram failure does not post to the webhook again;
- **backoff**: a failed delivery records ``attempts`` and ``last_error`` (redacted) and is
  retried after ``alert_retry_base_seconds`` doubling up to ``alert_retry_max_seconds``;
  after ``alert_max_attempts`` it is ``failed`` for good, with an event.

Rows are taken with ``FOR UPDATE SKIP LOCKED``, so two delivery runs at once (a redelivered
task, two beats by mistake) never send the same alert twice. Secrets (the webhook URL, the
bot token) never reach a log line, an event or ``last_error``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from core.clock import Clock
from core.config import Settings
from core.db.models import Alert, Event
from core.db.session import unit_of_work
from core.domain.timeutil import doubling_delay
from core.events import EventType, record
from core.logging import Redactor
from core.services.deps import UnitOfWork

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A channel did not accept an alert (network error, non-2xx, refusal)."""


class Channel(Protocol):
    @property
    def name(self) -> str:
        """Remembered in ``alerts.delivered`` once this channel has the alert."""

    def send(self, payload: dict[str, Any], text: str) -> None:
        """Deliver one alert or raise DeliveryError."""


def _post_json(url: str, body: dict[str, Any], timeout: float) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise DeliveryError("only http(s) URLs are allowed")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "vigil-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{type(exc).__name__}: {reason}") from None


@dataclass(frozen=True)
class WebhookChannel:
    """A generic webhook: the alert as one JSON object, POSTed."""

    url: str
    timeout: float = 5.0
    name: str = "webhook"

    def send(self, payload: dict[str, Any], text: str) -> None:
        _post_json(self.url, {**payload, "text": text}, self.timeout)


@dataclass(frozen=True)
class TelegramChannel:
    """Telegram Bot API ``sendMessage`` to one chat."""

    api_url: str
    bot_token: str
    chat_id: str
    timeout: float = 5.0
    name: str = "telegram"

    def send(self, payload: dict[str, Any], text: str) -> None:
        url = f"{self.api_url.rstrip('/')}/bot{self.bot_token}/sendMessage"
        body = {"chat_id": self.chat_id, "text": text[:4000], "disable_web_page_preview": True}
        answer = _post_json(url, body, self.timeout)
        try:
            ok = json.loads(answer or b"{}").get("ok", False)
        except ValueError:
            ok = False
        if not ok:
            raise DeliveryError("Telegram answered without ok=true")


def channels_from(settings: Settings) -> list[Channel]:
    """The channels the settings configure (none: alerts wait in the table)."""
    channels: list[Channel] = []
    if settings.alert_webhook_url is not None:
        channels.append(
            WebhookChannel(
                settings.alert_webhook_url.get_secret_value(), settings.alert_http_timeout
            )
        )
    if settings.alert_telegram_bot_token is not None and settings.alert_telegram_chat_id:
        channels.append(
            TelegramChannel(
                settings.alert_telegram_api_url,
                settings.alert_telegram_bot_token.get_secret_value(),
                settings.alert_telegram_chat_id,
                settings.alert_http_timeout,
            )
        )
    return channels


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    gave_up: int = 0
    suppressed: int = 0
    deferred: int = 0
    waiting_for_channel: int = 0


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """Backoff after the ``attempts``-th failure: base, 2x base, 4x base ... capped."""
    return timedelta(
        seconds=doubling_delay(
            settings.alert_retry_base_seconds, attempts - 1, settings.alert_retry_max_seconds
        )
    )


def deliver_pending(
    settings: Settings,
    clock: Clock,
    *,
    channels: list[Channel] | None = None,
    limit: int = 100,
    uow: UnitOfWork = unit_of_work,
) -> DeliveryReport:
    """Deliver what is due now; each alert in its own short transaction."""
    now = clock.now()
    channels = channels_from(settings) if channels is None else channels
    redactor = Redactor.from_settings(settings)
    report = DeliveryReport()
    with uow() as session:
        due = list(
            session.scalars(
                select(Alert.id)
                .where(
                    Alert.status == "pending",
                    (Alert.next_attempt_at.is_(None)) | (Alert.next_attempt_at <= now),
                )
                .order_by(Alert.id)
                .limit(limit)
            )
        )
    for alert_id in due:
        with uow() as session:
            alert = session.scalars(
                select(Alert)
                .where(Alert.id == alert_id, Alert.status == "pending")
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if alert is not None:
                _handle(session, alert, channels, settings, now, redactor, report)
    return report


def _handle(
    session: Session,
    alert: Alert,
    channels: list[Channel],
    settings: Settings,
    now: datetime,
    redactor: Redactor,
    report: DeliveryReport,
) -> None:
    if _suppress_duplicate(session, alert, settings):
        report.suppressed += 1
        return
    if alert.created_at < now - timedelta(hours=settings.alert_max_age_hours):
        _give_up(session, alert, "expired before it could be delivered", report)
        return
    if not channels:
        report.waiting_for_channel += 1
        return
    wait_until = _rate_limited_until(session, settings, now)
    if wait_until is not None:
        alert.next_attempt_at = wait_until
        report.deferred += 1
        return
    delivered, failures = _send(session, alert, channels, redactor)
    alert.delivered = delivered
    alert.attempts += 1
    if not failures:
        alert.status, alert.sent_at, alert.last_error = "sent", now, None
        record(session, EventType.ALERT_SENT, channels=delivered, **_about(alert))
        log.info("alert %s (%s) sent to %s", alert.id, alert.kind, ", ".join(delivered))
        report.sent += 1
        return
    alert.last_error = "; ".join(failures)[:1000]
    if alert.attempts >= settings.alert_max_attempts:
        _give_up(session, alert, alert.last_error, report)
        return
    alert.next_attempt_at = now + retry_delay(settings, alert.attempts)
    record(
        session,
        EventType.ALERT_DELIVERY_FAILED,
        error=alert.last_error,
        next_attempt_at=alert.next_attempt_at,
        **_about(alert),
    )
    log.warning(
        "alert %s delivery failed (attempt %s): %s", alert.id, alert.attempts, alert.last_error
    )
    report.retrying += 1


def _about(alert: Alert) -> dict[str, Any]:
    """What every delivery event (sent, failed, given up) says of its alert."""
    return {"alert_id": alert.id, "kind": alert.kind, "attempts": alert.attempts}


def _send(
    session: Session, alert: Alert, channels: list[Channel], redactor: Redactor
) -> tuple[list[str], list[str]]:
    """Send to every channel that has not had it yet: (delivered to, failures)."""
    payload, text = render(session, alert)
    delivered = list(alert.delivered or [])
    failures: list[str] = []
    for channel in channels:
        if channel.name in delivered:
            continue
        try:
            channel.send(payload, text)
            delivered.append(channel.name)
        except DeliveryError as exc:
            failures.append(f"{channel.name}: {redactor(str(exc))}")
    return delivered, failures


def _suppress_duplicate(session: Session, alert: Alert, settings: Settings) -> bool:
    """Fold the alert into an earlier one of the same kind+symbol inside the dedup window."""
    if settings.alert_dedup_seconds <= 0:
        return False
    window_start = alert.created_at - timedelta(seconds=settings.alert_dedup_seconds)
    earlier = session.scalars(
        _previous_alerted(alert, Alert.id).where(Alert.created_at >= window_start)
    ).first()
    if earlier is None:
        return False
    alert.status = "suppressed"
    session.execute(
        update(Alert).where(Alert.id == earlier).values(suppressed_count=Alert.suppressed_count + 1)
    )
    return True


def _previous_alerted(alert: Alert, column: Any) -> Select[Any]:
    """``column`` of the latest earlier alert of the same kind+symbol that was (or will be)
    sent: the one a duplicate folds into, and whose fold count the next message reports."""
    return (
        select(column)
        .where(
            Alert.dedup_key == alert.dedup_key,
            Alert.id < alert.id,
            Alert.status != "suppressed",
        )
        .order_by(Alert.id.desc())
        .limit(1)
    )


def _rate_limited_until(session: Session, settings: Settings, now: datetime) -> datetime | None:
    """When the next send is allowed, if the rate window is full now."""
    window = timedelta(seconds=settings.alert_rate_window_seconds)
    sent = session.execute(
        select(func.count(Alert.id), func.min(Alert.sent_at)).where(
            Alert.status == "sent", Alert.sent_at > now - window
        )
    ).one()
    count, oldest = int(sent[0]), sent[1]
    if count < settings.alert_rate_limit or oldest is None:
        return None
    return oldest + window


def _give_up(session: Session, alert: Alert, why: str, report: DeliveryReport) -> None:
    alert.status = "failed"
    alert.last_error = why[:1000]
    record(
        session,
        EventType.ALERT_GAVE_UP,
        error=alert.last_error,
        **_about(alert),
    )
    log.error("alert %s (%s) given up: %s", alert.id, alert.kind, alert.last_error)
    report.gave_up += 1


def render(session: Session, alert: Alert) -> tuple[dict[str, Any], str]:
    """The JSON payload and the human text of one alert."""
    event = session.get(Event, alert.event_id) if alert.event_id is not None else None
    previous = session.scalars(_previous_alerted(alert, Alert.suppressed_count)).first()
    payload: dict[str, Any] = {
        "alert_id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
        "suppressed_since_previous": previous or 0,
        "event_id": alert.event_id,
        "exchange": event.exchange if event else None,
        "symbol": event.symbol if event else None,
        "position_id": event.position_id if event else None,
        "correlation_id": event.correlation_id if event else None,
        "order_id": event.order_id if event else None,
        "data": event.data if event else {},
    }
    lines = [f"[{alert.severity.upper()}] {alert.message}"]
    if event is not None and event.data:
        details = ", ".join(f"{k}={v}" for k, v in sorted(event.data.items()))
        lines.append(details[:1500])
    if event is not None and event.correlation_id:
        lines.append(f"correlation {event.correlation_id}")
    if previous:
        lines.append(f"({previous} similar alerts were folded into the previous one)")
    return payload, "\n".join(lines)
