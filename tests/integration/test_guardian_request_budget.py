"""A guardian cycle costs the same exchange requests at 5 open positions as at 50.

Counted in the paper exchange's own request log, on a simulator listing 50 extra contracts
so 50 positions can be open at once through the engine's real opening path.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.clock import SYSTEM_CLOCK
from core.config import load_settings
from core.db.session import unit_of_work
from core.exchange.adapter import ExchangeAdapter
from core.exchange.factory import build_exchange
from core.services.deps import Deps
from core.services.opening import OpenOutcome, open_position
from core.services.positions import NewPosition, create_position
from core.services.protection import check_protection
from core.services.reconciliation import reconcile_positions
from core.services.zombies import cleanup_zombies
from sim.runner import SimServer
from sim.state import SimOptions
from tests.fixtures.engine import FAST

pytestmark = pytest.mark.integration

SYMBOLS = [f"SIM{i:03d}USDT" for i in range(50)]


@pytest.fixture(scope="module")
def wide_sim() -> Iterator[SimServer]:
    server = SimServer(
        SimOptions(seed=7, scenario="frozen", tick_interval=0.5, synthetic_symbols=len(SYMBOLS))
    ).start()
    yield server
    server.stop()


@pytest.fixture
def wide_deps(wide_sim: SimServer, clean_db: str, redis_client: Any) -> Deps:
    wide_sim.reset()
    settings = load_settings(**{**FAST, "exchange_url": wide_sim.url})
    client = build_exchange("paper", url=wide_sim.url, api_key="paper", api_secret="paper")
    adapter = ExchangeAdapter(client, "binance")
    adapter.load_markets()
    adapter.positions()  # ccxt loads leverage brackets once per client: not part of a cycle
    return Deps(settings, adapter, redis_client, SYSTEM_CLOCK)


def open_all(deps: Deps, symbols: list[str]) -> None:
    for symbol in symbols:
        with unit_of_work() as s:
            pid = create_position(s, NewPosition("binance", symbol, "long")).id
        assert open_position(deps, pid) is OpenOutcome.ACTIVE


def requests_of(sim: SimServer, cycle: Callable[[], Any]) -> tuple[Counter[tuple[str, str]], Any]:
    before = sim.requests()["next"]
    result = cycle()
    log = sim.requests(before)["requests"]
    return Counter((r["method"], r["path"]) for r in log), result


def test_guardian_cycles_cost_the_same_requests_at_5_and_50_positions(wide_sim, wide_deps):
    deps = wide_deps
    cycles = {
        "protection": lambda: check_protection(deps),
        "reconciliation": lambda: reconcile_positions(deps),
        "zombies": lambda: cleanup_zombies(deps),
    }

    open_all(deps, SYMBOLS[:5])
    at_5 = {name: requests_of(wide_sim, run) for name, run in cycles.items()}
    open_all(deps, SYMBOLS[5:])
    at_50 = {name: requests_of(wide_sim, run) for name, run in cycles.items()}

    assert at_5["protection"][1].healthy == 5 and at_50["protection"][1].healthy == 50
    assert at_50["reconciliation"][1].actions == {} and at_50["zombies"][1].detected == 0
    for name in cycles:
        assert at_5[name][0] == at_50[name][0], name
    snapshot = {
        ("GET", "/fapi/v3/positionRisk"): 1,
        ("GET", "/fapi/v1/openOrders"): 1,
        ("GET", "/fapi/v1/openAlgoOrders"): 1,
    }
    assert at_50["protection"][0] == snapshot
    assert at_50["zombies"][0] == snapshot
    assert at_50["reconciliation"][0] == {("GET", "/fapi/v3/positionRisk"): 1}
