"""The operator's control endpoints over HTTP, on both dialects of the paper exchange:
``POST /halt``, ``POST /resume``, ``POST /positions/<id>/close``, ``POST /close-all``, and the
halt as ``/health`` and ``/metrics`` show it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from core import metrics
from core.api.app import create_app
from core.db.models import Position
from core.db.session import unit_of_work
from core.services import halts
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tests.fixtures.venue import PaperVenue
from tests.integration.test_api import TOKEN, Served, beat_seen

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def api(paper_venue: PaperVenue, redis_client: Any) -> Iterator[Any]:
    """The API on the venue, started with the given settings; stopped after the test."""
    started: list[Served] = []
    metrics.configure_metrics(redis_client)

    def start(uow: Any = None, **overrides: Any) -> Served:
        """``uow``: the Deps' unit-of-work factory in place of the venue's own."""
        deps = paper_venue.make_deps(health_cache_seconds=0, **overrides)
        if uow is not None:
            deps = replace(deps, uow=uow)
        app = create_app(
            deps.settings,
            deps_factory=lambda: deps,
            redis_client=redis_client,
            worker_ping=lambda timeout: ["worker1@host"],
        )
        served = Served(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
    metrics.configure_metrics(None)


def opened(venue: PaperVenue, symbol: str) -> int:
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(venue.name, symbol, "long")).id
    assert open_position(venue.deps, pid) is OpenOutcome.ACTIVE
    return pid


def test_halt_and_resume_need_the_token_and_show_in_health_and_metrics(api):
    beat_seen()
    served = api(api_token=TOKEN)
    assert served.request("POST", "/halt")[0] == 401
    assert served.request("POST", "/halt", headers={"Authorization": "Bearer no"})[0] == 401
    status_before, health = served.request("GET", "/health")
    assert health["halted"] is False and health["halts"] == []

    status, body = served.request("POST", "/halt", headers=AUTH, body={"reason": "drill"})
    assert status == 200 and body["halted"] and body["created"]
    assert body["halt"]["reason"] == "drill" and body["halt"]["halted_by"].startswith("api:")
    status, health = served.request("GET", "/health")
    assert status == status_before  # a halt is shown, never a failure
    assert health["halted"] is True and health["halts"][0]["reason"] == "drill"
    assert served.request("GET", "/halt")[0] == 401  # a read too, once a token is set
    assert served.request("GET", "/halt", headers=AUTH)[1]["halted"] is True
    _, text = served.request("GET", "/metrics")
    assert 'vigil_halted{source="operator"} 1.0' in text
    assert 'vigil_halted{source="auth"} 0.0' in text

    status, body = served.request("POST", "/halt", headers=AUTH, body={"reason": 5})
    assert status == 400
    status, body = served.request("POST", "/resume", headers=AUTH)
    assert status == 200 and [h["reason"] for h in body["resumed"]] == ["drill"]
    assert served.request("GET", "/health")[1]["halted"] is False
    assert 'vigil_halted{source="operator"} 0.0' in served.request("GET", "/metrics")[1]


def test_control_endpoints_are_disabled_without_a_configured_token(api, paper_venue):
    served = api()
    pid = opened(paper_venue, "BTCUSDT")
    for path in ("/halt", "/resume", f"/positions/{pid}/close", "/close-all"):
        status, body = served.request("POST", path, headers={"Authorization": "Bearer x"})
        assert status == 403 and "VIGIL_API_TOKEN" in body["error"], path
    assert halts.current() == [] and len(paper_venue.positions("BTCUSDT")) == 1


def test_close_one_position_by_api_and_an_unknown_one_is_404(api, paper_venue):
    venue = paper_venue
    venue.set_price("BTCUSDT", "60000")
    served = api(api_token=TOKEN)
    pid = opened(venue, "BTCUSDT")

    assert served.request("POST", f"/positions/{pid}/close")[0] == 401
    status, body = served.request("POST", f"/positions/{pid}/close", headers=AUTH)
    assert status == 200, body
    assert body["closed"] and body["status"] == "closed" and body["close_reason"] == "manual"
    assert body["exit_price"] is not None and body["realized_pnl"] is not None
    assert venue.positions("BTCUSDT") == [] and venue.orders("BTCUSDT") == []

    assert served.request("POST", f"/positions/{pid}/close", headers=AUTH)[0] == 409
    assert served.request("POST", "/positions/999999/close", headers=AUTH)[0] == 404
    assert served.request("POST", "/positions/abc/close", headers=AUTH)[0] == 404
    assert halts.current() == []


def test_the_close_route_looks_the_position_up_through_its_deps_transactions(api):
    """No global default: the route hands the service the unit of work of the Deps it has."""
    opened_through: list[str] = []

    def counted_unit_of_work():
        opened_through.append("deps")
        return unit_of_work()

    served = api(api_token=TOKEN, uow=counted_unit_of_work)
    assert served.request("POST", "/positions/999999/close", headers=AUTH)[0] == 404
    assert opened_through == ["deps"]


def test_close_all_by_api_halts_first_and_closes_everything(api, paper_venue):
    venue = paper_venue
    served = api(api_token=TOKEN)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        opened(venue, symbol)

    status, body = served.request("POST", "/close-all?dry_run=true", headers=AUTH)
    assert status == 200 and body["dry_run"] and len(body["positions"]) == 2
    assert halts.current() == [] and len(venue.positions()) == 2

    status, body = served.request("POST", "/close-all", headers=AUTH)
    assert status == 200, body
    assert body["closed"] == 2 and body["not_closed"] == 0
    assert body["halt"]["reason"] == "close-all"
    assert venue.positions() == [] and venue.orders() == []
    with unit_of_work() as s:
        assert {p.close_reason for p in s.scalars(select(Position))} == {"manual"}
    assert [h.source for h in halts.current()] == ["operator"]
