"""The console of a two-venue deployment (VIGIL_EXCHANGES=binance,bybit): each position is
judged against its own venue's exchange (live stop, mark), the book filters by venue, and
one venue's unreadable exchange is said without blinding the other venue's rows."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from core import metrics
from core.api.app import create_app
from core.db.session import unit_of_work
from core.services.deps import deps_for, get_deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from tests.integration.test_api import Served
from tests.integration.test_console_http import get
from tests.integration.test_two_venues import two_venue_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def served(two_venue_env, redis_client):  # noqa: F811
    metrics.configure_metrics(redis_client)
    deps = get_deps()
    settings = deps.settings.model_copy(
        update={"api_token": SecretStr("venues-console-token"), "health_cache_seconds": 0}
    )
    running = Served(
        create_app(
            settings,
            deps_factory=lambda: deps,
            redis_client=redis_client,
            worker_ping=lambda timeout: ["w@h"],
        )
    )
    yield running
    running.stop()
    metrics.configure_metrics(None)


AUTH = {"Authorization": "Bearer venues-console-token"}


def _open(venue: str, exchange: Any) -> int:
    exchange.set_price("BTCUSDT", "60000")
    with unit_of_work() as s:
        pid = create_position(s, NewPosition(venue, "BTCUSDT", "long")).id
    assert open_position(deps_for(venue), pid) is OpenOutcome.ACTIVE
    return pid


def _row(body: str, pid: int) -> str:
    start = body.index(f'id="position-{pid}"')
    return body[start : body.index("</tr>", start)]


def test_each_position_is_judged_on_its_own_venue_and_the_book_filters_by_venue(
    sim, bybit_sim, served
):
    on_binance, on_bybit = _open("binance", sim), _open("bybit", bybit_sim)

    status, _, body = get(served, "/console/fragments/book", AUTH)
    assert status == 200, body
    for pid in (on_binance, on_bybit):
        assert 'class="ok">protected' in _row(body, pid), _row(body, pid)
    assert "60000" in _row(body, on_bybit)  # the Bybit mark, from the Bybit exchange

    _, _, only = get(served, "/console/fragments/book?exchange=bybit", AUTH)
    assert f'id="position-{on_bybit}"' in only and f'id="position-{on_binance}"' not in only

    # the Bybit stop cancelled by hand: that row alone is unprotected
    (stop,) = [o for o in bybit_sim.state()["open_orders"] if o.get("stopOrderType")]
    deps_for("bybit").exchange.cancel_order("BTCUSDT", str(stop["orderId"]), conditional=True)
    _, _, body = get(served, "/console/fragments/book", AUTH)
    assert "unprotected for" in _row(body, on_bybit), _row(body, on_bybit)
    assert 'class="ok">protected' in _row(body, on_binance)

    # Bybit unreadable: said, naming the venue; the Binance row is still judged
    bybit_sim.fault("order/realtime", "http_error", count=50)
    _, _, body = get(served, "/console/fragments/book", AUTH)
    assert "Exchange unreadable, stops unknown: bybit:" in body, body[:2000]
    assert 'class="ok">protected' in _row(body, on_binance)
    assert "protected" not in _row(body, on_bybit).replace("unprotected", "")
