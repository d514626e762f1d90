"""Paging when blind: failing health components page once through the outbox (any
component, one added later included), the database down pages straight to the channels
and is recorded when it is back, failed guardian reads of the exchange (a revoked key)
page at the N-th consecutive cycle."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from core.clock import SYSTEM_CLOCK
from core.db.models import Alert, Event
from core.db.session import new_session
from core.events import EventType
from core.exchange.adapter import ExchangeAdapter
from core.exchange.errors import AuthenticationFailed, ExchangeFailure
from core.exchange.factory import build_exchange
from core.services.deps import Deps
from core.services.health import FAIL, OK, Component, HealthReport
from core.services.paging import Watchdog
from core.services.protection import check_protection

pytestmark = pytest.mark.integration


class Inbox:
    """A local HTTP endpoint recording every request (the webhook, the dead-man's URL)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def _take(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                inbox.received.append((self.command, self.path, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _take

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self) -> list[dict]:
        return [body for method, _, body in self.received if method == "POST"]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


def report(**failing: bool) -> HealthReport:
    names = ["database", "redis", "exchange", "beat", "workers", "price_feed"]
    components = {
        name: Component(
            FAIL if failing.get(name) else OK, {"error": "x"} if failing.get(name) else {}
        )
        for name in names
    }
    return HealthReport(SYSTEM_CLOCK.now(), components)


class FakeHealth:
    """Only what the watchdog reads of a HealthChecker; the report is given per cycle."""

    def __init__(self, redis_client) -> None:
        self.redis = redis_client
        self.exchange_name = "binance"


@pytest.fixture
def watchdog(make_deps, inbox, redis_client):
    deps = make_deps(page_confirm_seconds=0, alert_webhook_url=inbox.url + "/hook")
    return Watchdog(deps.settings, SYSTEM_CLOCK, FakeHealth(redis_client), host="api")


def events(kind: EventType) -> list[Event]:
    with new_session() as s:
        return list(s.scalars(select(Event).where(Event.type == kind.value).order_by(Event.id)))


def alerts() -> list[Alert]:
    with new_session() as s:
        return list(s.scalars(select(Alert).order_by(Alert.id)))


def test_a_failing_component_pages_once_through_the_outbox_and_its_recovery_is_noted(
    watchdog, inbox
):
    watchdog.act(report(beat=True, price_feed=True))  # price_feed: a component added later
    down = events(EventType.COMPONENT_DOWN)
    assert sorted(e.data["component"] for e in down) == ["beat", "price_feed"]
    assert all(e.severity == "critical" and e.data["noticed_by"] == "api" for e in down)
    assert {a.dedup_key for a in alerts()} == {
        "component_down:binance:-:beat",
        "component_down:binance:-:price_feed",
    }
    # delivered by the watchdog itself: beat's delivery task may be the very thing down
    assert sorted(p["data"]["component"] for p in inbox.posts()) == ["beat", "price_feed"]
    watchdog.act(report(beat=True, price_feed=True))
    assert len(events(EventType.COMPONENT_DOWN)) == 2  # no second page while it stays down
    watchdog.act(report())
    assert sorted(e.data["component"] for e in events(EventType.COMPONENT_RECOVERED)) == [
        "beat",
        "price_feed",
    ]


def test_the_exchange_component_does_not_page_from_the_watchdog(watchdog):
    decision = watchdog.act(report(exchange=True))
    assert decision.pages == () and events(EventType.COMPONENT_DOWN) == []


def test_the_database_down_pages_directly_and_is_recorded_once_it_is_back(watchdog, inbox):
    watchdog.act(report(database=True, beat=True))
    (direct,) = inbox.posts()
    assert direct["sent_directly"] is True and direct["data"]["component"] == "database"
    assert events(EventType.COMPONENT_DOWN) == []  # nothing written while it is "down"
    watchdog.act(report(database=True, beat=True))
    assert len(inbox.posts()) == 1  # not sent again
    watchdog.act(report())
    (recorded,) = events(EventType.COMPONENT_DOWN)
    assert recorded.data["component"] == "database" and recorded.data["sent_directly"] is True
    (alert,) = alerts()
    assert alert.status == "sent" and alert.delivered == ["webhook"]
    assert len(inbox.posts()) == 1  # the recorded alert is not delivered a second time
    assert [e.data["component"] for e in events(EventType.COMPONENT_RECOVERED)] == ["database"]


def test_two_watchdogs_send_one_direct_page_per_dedup_window(
    watchdog, make_deps, inbox, redis_client
):
    other = Watchdog(watchdog.settings, SYSTEM_CLOCK, FakeHealth(redis_client), host="beat")
    watchdog.act(report(database=True))
    other.act(report(database=True))
    assert len(inbox.posts()) == 1


@pytest.fixture
def revoked_deps(make_deps, sim, _paper_session_exchange):
    """The engine with a key the exchange no longer accepts: Binance answers -2015."""
    deps = make_deps(exchange_read_failure_cycles=3)
    client = build_exchange("paper", url=sim.url, api_key="revoked", api_secret="revoked")
    client.set_markets(_paper_session_exchange.markets)
    return Deps(deps.settings, ExchangeAdapter(client, "binance"), deps.redis, SYSTEM_CLOCK)


def test_a_revoked_key_pages_at_the_first_failed_guardian_cycle(revoked_deps, make_deps):
    with pytest.raises(AuthenticationFailed):
        check_protection(revoked_deps)
    (page,) = events(EventType.EXCHANGE_READS_FAILING)
    assert page.severity == "critical" and page.data["consecutive_failures"] == 1
    assert page.data["error_type"] == "AuthenticationFailed"
    assert page.data["guardian"] == "protection"
    # the refused key also halts openings (core/services/venue_watch.py): its own page
    assert sorted(a.kind for a in alerts()) == ["exchange_reads_failing", "halted"]
    with pytest.raises(AuthenticationFailed):
        check_protection(revoked_deps)
    assert len(events(EventType.EXCHANGE_READS_FAILING)) == 1  # not every cycle
    check_protection(make_deps())  # the key works again
    assert len(events(EventType.EXCHANGE_READS_RECOVERED)) == 1


def test_failing_reads_page_at_the_nth_consecutive_cycle_and_a_success_resets(make_deps, sim):
    deps = make_deps(exchange_read_failure_cycles=3)
    sim.fault("positionRisk", "http_error", probability=1)
    for cycle in range(1, 4):
        with pytest.raises(ExchangeFailure):
            check_protection(deps)
        assert len(events(EventType.EXCHANGE_READS_FAILING)) == (1 if cycle == 3 else 0)
    (page,) = events(EventType.EXCHANGE_READS_FAILING)
    assert page.data["consecutive_failures"] == 3
    sim.admin("DELETE", "/_sim/fault")
    check_protection(deps)
    assert len(events(EventType.EXCHANGE_READS_RECOVERED)) == 1
    sim.fault("positionRisk", "http_error", probability=1)
    with pytest.raises(ExchangeFailure):
        check_protection(deps)
    assert len(events(EventType.EXCHANGE_READS_FAILING)) == 1  # the count started over


def test_a_real_database_outage_pages_directly_and_is_recorded_once_it_is_back(
    make_deps, inbox, redis_client, database_url
):
    from sqlalchemy.engine import make_url

    from core.db import session as db_session
    from core.services.health import ExchangeReads, HealthChecker
    from shell.runtime.embedded import free_port

    deps = make_deps(page_confirm_seconds=0, alert_webhook_url=inbox.url + "/hook")
    health = HealthChecker(
        deps.settings,
        SYSTEM_CLOCK,
        lambda: deps,
        redis_client,
        ExchangeReads(lambda: deps, 0),
        lambda timeout: ["worker1@host"],
        exchange_name="binance",
    )
    watchdog = Watchdog(deps.settings, SYSTEM_CLOCK, health, host="api")
    nowhere = make_url(database_url).set(port=free_port()).render_as_string(hide_password=False)
    db_session.configure(nowhere)  # this process's database is gone
    try:
        decision = asyncio.run(watchdog.cycle())
    finally:
        db_session.configure(database_url)
    assert [page.name for page in decision.pages] == ["database"]
    (direct,) = inbox.posts()
    assert direct["sent_directly"] is True and direct["data"]["component"] == "database"
    assert events(EventType.COMPONENT_DOWN) == []
    asyncio.run(watchdog.cycle())  # the database answers again
    recorded = [e for e in events(EventType.COMPONENT_DOWN) if e.data["component"] == "database"]
    assert len(recorded) == 1 and recorded[0].data["sent_directly"] is True
    assert [p["data"]["component"] for p in inbox.posts()].count("database") == 1
