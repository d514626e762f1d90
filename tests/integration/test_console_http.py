"""The console over plain HTTP: routing, 404s, the token, escaping, headers."""

import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from core import metrics
from core.api.app import create_app
from core.db.models import Event, Position, Signal
from core.db.session import unit_of_work
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tests.integration.test_api import Served

pytestmark = pytest.mark.integration

TOKEN = "console-http-token-123"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(served, path, headers=None):
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", headers=headers or {})
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


@pytest.fixture
def console(sim, make_deps, redis_client):
    started = []
    metrics.configure_metrics(redis_client)

    def start(**overrides):
        deps = make_deps(**{"health_cache_seconds": 0, **overrides})
        app = create_app(
            deps.settings,
            deps_factory=lambda: deps,
            redis_client=redis_client,
            worker_ping=lambda timeout: ["w@h"],
        )
        served = Served(app)
        started.append(served)
        return served, deps

    yield start
    for served in started:
        served.stop()
    metrics.configure_metrics(None)


def opened(deps, symbol="BTCUSDT"):
    with unit_of_work() as s:
        pid = create_position(s, NewPosition("binance", symbol, "long")).id
    assert open_position(deps, pid) is OpenOutcome.ACTIVE
    return pid


def test_browsers_asking_for_the_root_go_to_the_console_and_json_clients_keep_the_index(console):
    served, _ = console()
    status, headers, _ = get(served, "/", {"Accept": "text/html,application/xhtml+xml"})
    assert status == 302 and headers["Location"] == "/console"
    status, headers, body = get(served, "/", {"Accept": "application/json"})
    assert status == 200 and '"/health"' in body and '"/console"' in body
    status, headers, body = get(served, "/")
    assert status == 200 and "endpoints" in body


def test_the_pages_forbid_inline_script_and_carry_the_book_only_when_reads_are_open(console):
    served, deps = console()
    opened(deps)
    status, headers, body = get(served, "/console")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "BTCUSDT" in body and 'data-loaded="true"' in body  # first book in the page
    assert "<script>" not in body and "style=" not in body
    served, deps = console(api_token=TOKEN)
    status, _, body = get(served, "/console")
    assert status == 200 and "BTCUSDT" not in body  # the shell; the data needs the token
    status, headers, body = get(served, "/console/static/console.js")
    assert status == 200 and "sessionStorage" in body


def test_the_book_fragment_lists_open_positions_with_totals(console):
    served, deps = console()
    pid = opened(deps)
    status, _, body = get(served, "/console/fragments/book")
    assert status == 200
    assert f'id="position-{pid}"' in body and "BTCUSDT" in body
    assert 'class="ok">protected' in body
    status, _, body = get(served, "/console/fragments/book?exchange=bybit")
    assert "No open positions." in body


def test_unknown_and_malformed_position_ids_are_404_pages(console):
    served, deps = console()
    pid = opened(deps)
    assert get(served, f"/console/positions/{pid}")[0] == 200
    for bad in ("424242", "x", "-1", "1e9", "9" * 30, "%3Cscript%3E"):
        status, headers, body = get(served, f"/console/positions/{bad}")
        assert status == 404, bad
        assert headers["Content-Type"].startswith("text/html") and "Not found" in body
        assert get(served, f"/console/fragments/positions/{bad}")[0] == 404


def test_with_a_token_configured_fragments_need_it_and_controls_come_with_it(console):
    served, deps = console(api_token=TOKEN)
    pid = opened(deps)
    # the shells and the static files pass the API's token rule: they carry no data
    assert get(served, "/console")[0] == 200  # the shell asks for the token
    assert get(served, f"/console/positions/{pid}")[0] == 200
    assert get(served, "/console/static/console.js")[0] == 200
    assert get(served, "/console/static/nope.js")[0] == 404
    status, headers, _ = get(served, "/", {"Accept": "text/html"})
    assert status == 302 and headers["Location"] == "/console"
    assert get(served, "/", {"Accept": "application/json"})[0] == 401  # the index is not open
    assert get(served, "/positions")[0] == 401
    assert get(served, "/console/fragments/book")[0] == 401
    assert get(served, "/console/fragments/system")[0] == 401
    assert get(served, f"/console/fragments/positions/{pid}")[0] == 401
    wrong = {"Authorization": "Bearer nope"}
    assert get(served, "/console/fragments/book", wrong)[0] == 401
    status, _, body = get(served, "/console/fragments/book", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and 'data-action="close"' in body


def test_without_a_token_configured_there_are_no_controls(console):
    served, deps = console()
    opened(deps)
    for path in ("/console/fragments/book", "/console/fragments/system"):
        status, _, body = get(served, path)
        assert status == 200 and "data-action" not in body


def test_outside_text_is_escaped_in_every_fragment(console):
    served, deps = console()
    pid = opened(deps)
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    with unit_of_work() as s:
        signal = Signal(
            signal_id=evil,
            exchange="binance",
            symbol="BTCUSDT",
            action="BUY",
            score_week=Decimal(1),
            score_month=Decimal(1),
            signal_ts=deps.clock.now(),
            outcome_reason=evil,
            correlation_id="c",
            raw={"x": evil},
        )
        s.add(signal)
        s.flush()
        s.get(Position, pid).signal_id = signal.id
        s.add(Event(type="signal_rejected", severity="warning", data={"reason": evil}))
        s.add(Event(type=evil, severity="error", symbol=evil[:40], position_id=pid, data={evil: 1}))
    for path in ("/console/fragments/system", f"/console/fragments/positions/{pid}"):
        status, _, body = get(served, path)
        assert status == 200
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_an_unreadable_exchange_is_said_and_no_position_is_called_protected(console, sim):
    served, deps = console()
    pid = opened(deps)
    sim.fault("openOrders", "http_error", count=50)
    status, _, body = get(served, "/console/fragments/book")
    assert status == 200
    assert "Exchange unreadable, stops unknown" in body
    assert f'id="position-{pid}"' in body and ">protected<" not in body


def test_a_position_opened_after_the_cached_exchange_read_is_not_called_unprotected(console):
    served, deps = console(health_cache_seconds=600)
    get(served, "/console/fragments/book")  # the read of the open orders, cached: none yet
    pid = opened(deps)
    status, _, body = get(served, "/console/fragments/book")
    assert status == 200 and f'id="position-{pid}"' in body
    assert "unprotected for" not in body and "checking…" in body
    assert '<span class="big">0</span>' in body  # positions without a stop


def test_with_public_reads_the_book_is_read_only_without_the_token(console):
    served, deps = console(api_token=TOKEN, api_public_reads=True)
    pid = opened(deps)
    status, _, body = get(served, "/console")
    assert status == 200 and f'id="position-{pid}"' in body  # the book in the page itself
    status, _, body = get(served, "/console/fragments/book")
    assert status == 200 and "data-action" not in body
    status, _, body = get(served, "/console/fragments/book", {"Authorization": f"Bearer {TOKEN}"})
    assert 'data-action="close"' in body
